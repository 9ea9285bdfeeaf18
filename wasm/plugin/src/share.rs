//! One poll per Envoy: the VMs of a process elect a leader through a lease in proxy-wasm shared
//! data; only the leader polls the broadcaster and publishes each snapshot it gets, the others
//! pick it up on their tick. Pure logic here; the host calls are in `host`.
//!
//! Keys: [`LEASE_KEY`] holds `<vm id> <expiry ms>`, written with CAS; [`SNAPSHOT_KEY`] the
//! snapshot's data as the broadcaster sent it; [`MARK_KEY`] is rewritten after each snapshot,
//! so its CAS tells a VM cheaply that there is a new one.

pub const LEASE_KEY: &str = "boifi.lease";
pub const SNAPSHOT_KEY: &str = "boifi.snapshot";
pub const MARK_KEY: &str = "boifi.snapshot.mark";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
