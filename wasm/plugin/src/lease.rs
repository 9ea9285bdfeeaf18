//! One poll per Envoy: the VMs of a process elect a leader through a lease in proxy-wasm shared
//! data ([`lead`]); only the leader polls the broadcaster and shares each snapshot it gets
//! ([`publish`]), the others pick it up on their tick ([`follow`]). Shared data is reached
//! through [`Host`], so the tests run this against a fake with Envoy's CAS rules.
//!
//! Keys ([`Keys`]): `lease` holds `<vm id> <expiry ms>`, written with CAS; `snapshot` the
//! snapshot's data as the broadcaster sent it; `mark` is rewritten after each snapshot, so its
//! CAS tells a VM cheaply that there is a new one.
//!
//! Shared data is one namespace per `vm_id` in the Envoy process, and istiod gives a
//! WasmPlugin's VMs none, so the VMs of every WasmPlugin in a sidecar share it. The keys carry
//! the plugin's name (istiod's `<namespace>.<WasmPlugin name>`): two BOIFI releases targeting one
//! workload each elect their own poller and keep their own snapshot.

use crate::host::Host;

/// The shared-data keys of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub lease: String,
    pub snapshot: String,
    pub mark: String,
    /// See [`crate::applied`].
    pub applied: String,
}

impl Keys {
    /// The keys of the plugin named `name` (none or empty: `boifi.<key>`).
    pub fn for_plugin(name: Option<&str>) -> Keys {
        let prefix = match name {
            Some(name) if !name.is_empty() => format!("boifi.{name}."),
            _ => "boifi.".to_owned(),
        };
        Keys {
            lease: format!("{prefix}lease"),
            snapshot: format!("{prefix}snapshot"),
            mark: format!("{prefix}snapshot.mark"),
            applied: format!("{prefix}applied"),
        }
    }
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::for_plugin(None)
    }
}

/// How long a lease lasts without renewal: a vanished leader is replaced after this.
pub const LEASE_MS: u64 = 3_000;
/// The longest a VM sleeps: the leader renews its lease, the others look for a new snapshot.
pub const SYNC_MS: u64 = 50;

/// The lease to write for VM `me`, or `None` while another VM holds an unexpired one.
pub fn claim(current: Option<&[u8]>, me: u64, now_ms: u64) -> Option<String> {
    match current.and_then(holder) {
        Some((id, until)) if id != me && until > now_ms => None,
        _ => Some(format!("{me} {}", now_ms + LEASE_MS)),
    }
}

/// The holder of a stored lease and its expiry; `None` for an unreadable one (then it is free).
pub fn holder(lease: &[u8]) -> Option<(u64, u64)> {
    let (id, until) = std::str::from_utf8(lease).ok()?.split_once(' ')?;
    Some((id.parse().ok()?, until.parse().ok()?))
}

/// Whether VM `me` holds the lease at `now_ms`: renewed, or just taken because it was free or
/// ran out. A lease is written with the CAS it was read with, so of two VMs taking it from the
/// same reading only one succeeds.
pub fn lead(host: &impl Host, keys: &Keys, me: u64, now_ms: u64) -> bool {
    let (lease, cas) = host.shared_data(&keys.lease);
    let Some(lease) = claim(lease.as_deref(), me, now_ms) else {
        return false;
    };
    if !host.set_shared_data(&keys.lease, lease.as_bytes(), cas) {
        return false;
    }
    // A first lease is written without CAS, so several VMs may write it: the last one wins.
    cas.is_some()
        || host
            .shared_data(&keys.lease)
            .0
            .as_deref()
            .and_then(holder)
            .is_some_and(|(id, _)| id == me)
}

/// The snapshot data another VM shared since this one last looked (`seen`: the mark's CAS then,
/// updated here). `None` when there is nothing new, or it cannot be read.
pub fn follow(host: &impl Host, keys: &Keys, seen: &mut Option<u32>) -> Option<String> {
    let (_, mark) = host.shared_data(&keys.mark);
    if mark.is_none() || mark == *seen {
        return None;
    }
    *seen = mark;
    host.shared_data(&keys.snapshot)
        .0
        .and_then(|d| String::from_utf8(d).ok())
}

/// Shares snapshot `data` with the other VMs. Once both keys are written, `seen` becomes the
/// mark's new CAS, so this VM does not follow its own snapshot.
pub fn publish(host: &impl Host, keys: &Keys, data: &str, seen: &mut Option<u32>) {
    if host.set_shared_data(&keys.snapshot, data.as_bytes(), None)
        && host.set_shared_data(&keys.mark, b"1", None)
    {
        *seen = host.shared_data(&keys.mark).1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeHost, Process};

    fn keys() -> Keys {
        Keys::default()
    }

    #[test]
    fn a_free_or_unreadable_lease_is_taken() {
        assert_eq!(claim(None, 7, 100).as_deref(), Some("7 3100"));
        assert_eq!(claim(Some(b"junk"), 7, 100).as_deref(), Some("7 3100"));
    }

    #[test]
    fn the_holder_renews_and_others_wait_for_expiry() {
        let lease = claim(None, 7, 100).unwrap();
        assert_eq!(holder(lease.as_bytes()), Some((7, 3100)));
        assert_eq!(
            claim(Some(lease.as_bytes()), 7, 1000).as_deref(),
            Some("7 4000")
        );
        assert_eq!(claim(Some(lease.as_bytes()), 8, 3099), None);
        assert_eq!(
            claim(Some(lease.as_bytes()), 8, 3100).as_deref(),
            Some("8 6100")
        );
    }

    fn vms(n: usize) -> (std::rc::Rc<crate::test_support::Process>, Vec<FakeHost>) {
        let process = Process::at_ms(1_000);
        let hosts = (0..n).map(|_| FakeHost::new(&process)).collect();
        (process, hosts)
    }

    #[test]
    fn one_vm_leads_until_it_stops_renewing() {
        let (process, hosts) = vms(3);
        let leaders = |now: u64| -> Vec<u64> {
            (0..3u64)
                .filter(|&i| lead(&hosts[i as usize], &keys(), i + 1, now))
                .map(|i| i + 1)
                .collect()
        };
        assert_eq!(leaders(process.now_ms()), [1], "the first to look takes it");
        assert_eq!(process.shared(&keys().lease).as_deref(), Some("1 4000"));
        // Renewed on every tick: the others keep waiting.
        for _ in 0..100 {
            process.advance_ms(SYNC_MS);
            assert_eq!(leaders(process.now_ms()), [1]);
        }
        // VM 1 goes away: the lease runs out, and the next VM to look takes it over.
        let renewed = process.now_ms();
        process.advance_ms(LEASE_MS - 1);
        assert!(!lead(&hosts[1], &keys(), 2, process.now_ms()));
        process.advance_ms(1);
        assert_eq!(process.now_ms(), renewed + LEASE_MS);
        assert!(lead(&hosts[1], &keys(), 2, process.now_ms()));
        assert!(!lead(&hosts[2], &keys(), 3, process.now_ms()));
        assert!(
            !lead(&hosts[0], &keys(), 1, process.now_ms()),
            "a returning VM waits too"
        );
    }

    #[test]
    fn of_two_vms_taking_an_expired_lease_only_one_gets_it() {
        let (process, hosts) = vms(2);
        assert!(lead(&hosts[0], &keys(), 1, process.now_ms()));
        process.advance_ms(LEASE_MS);
        // VM 2 reads the expired lease; before it writes, VM 3 takes it: VM 2's CAS is stale.
        let other = hosts[1].clone();
        let now = process.now_ms();
        hosts[0].before_next_write(move || assert!(lead(&other, &keys(), 3, now)));
        assert!(!lead(&hosts[0], &keys(), 2, now));
        assert_eq!(
            holder(process.shared(&keys().lease).unwrap().as_bytes()),
            Some((3, now + LEASE_MS))
        );
    }

    #[test]
    fn a_first_lease_goes_to_the_last_writer() {
        // No lease yet, so both write without CAS: both may believe they lead for one tick,
        // and the first to renew afterwards finds the other's lease and steps down.
        let (process, hosts) = vms(2);
        let other = hosts[1].clone();
        let now = process.now_ms();
        hosts[0].before_next_write(move || assert!(lead(&other, &keys(), 2, now)));
        assert!(
            lead(&hosts[0], &keys(), 1, now),
            "wrote last, reads its own lease back"
        );
        process.advance_ms(SYNC_MS);
        assert!(!lead(&hosts[1], &keys(), 2, process.now_ms()));
        assert!(lead(&hosts[0], &keys(), 1, process.now_ms()));
    }

    /// istiod gives every WasmPlugin's VMs the same shared-data namespace: the VMs of two
    /// plugins (two BOIFI releases in one sidecar) each elect a leader and keep a snapshot.
    #[test]
    fn two_plugins_in_one_envoy_have_their_own_lease_and_snapshot() {
        let (process, hosts) = vms(2);
        let (first, second) = (
            Keys::for_plugin(Some("boifi.boifi-plugin")),
            Keys::for_plugin(Some("chaos-team.boifi-plugin")),
        );
        assert_ne!(first, second);
        assert_eq!(first.lease, "boifi.boifi.boifi-plugin.lease");
        assert_eq!(Keys::for_plugin(Some("")), Keys::default());
        let now = process.now_ms();
        assert!(lead(&hosts[0], &first, 1, now));
        assert!(
            lead(&hosts[1], &second, 2, now),
            "not the first plugin's lease"
        );
        let (mut seen_first, mut seen_second) = (None, None);
        publish(&hosts[0], &first, "{\"revision\":7}", &mut seen_first);
        assert_eq!(follow(&hosts[1], &second, &mut seen_second), None);
        publish(&hosts[1], &second, "{\"revision\":3}", &mut seen_second);
        let mut fresh = None;
        assert_eq!(
            follow(&hosts[0], &first, &mut fresh).as_deref(),
            Some("{\"revision\":7}")
        );
    }

    #[test]
    fn snapshots_are_followed_once_and_not_by_their_publisher() {
        let (_process, hosts) = vms(2);
        let (mut seen_by_leader, mut seen_by_other) = (None, None);
        assert_eq!(
            follow(&hosts[1], &keys(), &mut seen_by_other),
            None,
            "nothing shared yet"
        );
        publish(&hosts[0], &keys(), "{\"revision\":1}", &mut seen_by_leader);
        assert_eq!(
            follow(&hosts[0], &keys(), &mut seen_by_leader),
            None,
            "its own"
        );
        assert_eq!(
            follow(&hosts[1], &keys(), &mut seen_by_other).as_deref(),
            Some("{\"revision\":1}")
        );
        assert_eq!(
            follow(&hosts[1], &keys(), &mut seen_by_other),
            None,
            "only once"
        );
        publish(&hosts[0], &keys(), "{\"revision\":2}", &mut seen_by_leader);
        assert_eq!(
            follow(&hosts[1], &keys(), &mut seen_by_other).as_deref(),
            Some("{\"revision\":2}")
        );
    }
}
