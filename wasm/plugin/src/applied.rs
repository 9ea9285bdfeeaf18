//! Which revision each VM of this Envoy applies, so that the sidecar reports a revision as
//! enforced only once every VM serving its requests has it.
//!
//! Only the polling VM gets a snapshot from the broadcaster; the others pick it up from shared
//! data on their next tick (up to [`crate::lease::SYNC_MS`] later). The `revision` of the next
//! poll is what the broadcaster records as the revision this sidecar enforces, so if that poll
//! went out at once, the API would say "enforced" while a worker VM still decides requests on
//! the previous set. Instead every VM writes its own line in shared data (the plugin's
//! [`Keys::applied`]) when it applies a
//! snapshot (and every [`HEARTBEAT_MS`]), and the polling VM holds its next poll until every VM
//! heard of in the last [`LIVE_MS`] applies the revision it just got, or [`MAX_HOLD_MS`] passed.
//!
//! The key holds one line per VM, `<vm id> <revision> <ms>`, rewritten with CAS. A VM that goes
//! away (a configuration reload replaces every VM) stops writing and drops out after [`LIVE_MS`].

use crate::host::Host;
use crate::lease::Keys;

/// How often a VM rewrites its line when nothing changed, to stay counted.
pub const HEARTBEAT_MS: u64 = 500;
/// A VM whose line is older than this is gone.
pub const LIVE_MS: u64 = 3 * HEARTBEAT_MS;
/// The longest the polling VM holds its next poll for the others (a VM that cannot parse a
/// snapshot never applies it; it must not stop the sidecar from polling).
pub const MAX_HOLD_MS: u64 = 1_000;
/// How often the polling VM looks again while it holds its poll.
pub const HOLD_CHECK_MS: u64 = 5;
/// Most lines kept (Envoy runs one VM per worker thread plus one on the main thread).
pub const MAX_VMS: usize = 512;
/// Writes that lose a CAS race are retried this often, then left to the next tick.
const CAS_ATTEMPTS: usize = 3;

/// One VM's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub vm: u64,
    pub revision: u64,
    pub at_ms: u64,
}

/// The lines of a stored value; unreadable lines are skipped, at most [`MAX_VMS`] kept.
pub fn parse(value: &[u8]) -> Vec<Applied> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').map(str::parse::<u64>);
            let line = Applied {
                vm: fields.next()?.ok()?,
                revision: fields.next()?.ok()?,
                at_ms: fields.next()?.ok()?,
            };
            fields.next().is_none().then_some(line)
        })
        .take(MAX_VMS)
        .collect()
}

fn render(lines: &[Applied]) -> String {
    lines
        .iter()
        .map(|l| format!("{} {} {}\n", l.vm, l.revision, l.at_ms))
        .collect()
}

fn is_live(line: &Applied, now_ms: u64) -> bool {
    now_ms.saturating_sub(line.at_ms) < LIVE_MS
}

/// Records that VM `me` applies `revision` at `now_ms`, dropping the lines of VMs gone. False
/// when the write kept losing CAS races (the caller tries again on its next tick).
pub fn record(host: &impl Host, keys: &Keys, me: u64, revision: u64, now_ms: u64) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = host.shared_data(&keys.applied);
        let mut lines: Vec<Applied> = parse(value.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|l| l.vm != me && is_live(l, now_ms))
            .take(MAX_VMS - 1)
            .collect();
        lines.push(Applied {
            vm: me,
            revision,
            at_ms: now_ms,
        });
        if host.set_shared_data(&keys.applied, render(&lines).as_bytes(), cas) {
            return true;
        }
    }
    false
}

/// How many live VMs apply another revision than `revision`.
pub fn behind(host: &impl Host, keys: &Keys, revision: u64, now_ms: u64) -> usize {
    let value = host.shared_data(&keys.applied).0.unwrap_or_default();
    parse(&value)
        .iter()
        .filter(|l| is_live(l, now_ms) && l.revision != revision)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeHost, Process};

    fn keys() -> Keys {
        Keys::default()
    }

    #[test]
    fn lines_round_trip_and_junk_is_skipped() {
        let lines = [
            Applied {
                vm: 7,
                revision: 3,
                at_ms: 100,
            },
            Applied {
                vm: u64::MAX,
                revision: 0,
                at_ms: 5,
            },
        ];
        assert_eq!(parse(render(&lines).as_bytes()), lines);
        assert_eq!(
            parse(b"1 2 3\nx 2 3\n1 2\n1 2 3 4\n\n4 5 6"),
            [
                Applied {
                    vm: 1,
                    revision: 2,
                    at_ms: 3
                },
                Applied {
                    vm: 4,
                    revision: 5,
                    at_ms: 6
                }
            ]
        );
        assert!(parse(&[0xff, b' ', b'1']).is_empty());
        let many = "1 1 1\n".repeat(MAX_VMS + 10);
        assert_eq!(parse(many.as_bytes()).len(), MAX_VMS);
    }

    #[test]
    fn every_vm_keeps_its_own_line_and_gone_vms_drop_out() {
        let process = Process::at_ms(10_000);
        let host = FakeHost::new(&process);
        assert_eq!(
            behind(&host, &keys(), 5, process.now_ms()),
            0,
            "no VM heard of yet"
        );
        assert!(record(&host, &keys(), 1, 5, process.now_ms()));
        assert!(record(&host, &keys(), 2, 4, process.now_ms()));
        assert_eq!(behind(&host, &keys(), 5, process.now_ms()), 1);
        assert!(record(&host, &keys(), 2, 5, process.now_ms()));
        assert_eq!(behind(&host, &keys(), 5, process.now_ms()), 0);
        assert_eq!(
            parse(process.shared(&keys().applied).unwrap().as_bytes()).len(),
            2
        );
        // VM 2 stops writing: VM 1's heartbeats keep going, and VM 2's line expires.
        assert!(record(&host, &keys(), 2, 4, process.now_ms()));
        process.advance_ms(LIVE_MS - 1);
        assert_eq!(behind(&host, &keys(), 5, process.now_ms()), 1);
        assert!(record(&host, &keys(), 1, 5, process.now_ms()));
        process.advance_ms(1);
        assert_eq!(
            behind(&host, &keys(), 5, process.now_ms()),
            0,
            "VM 2 is gone"
        );
        assert!(record(&host, &keys(), 1, 5, process.now_ms()));
        assert_eq!(
            process.shared(&keys().applied).as_deref(),
            Some("1 5 11500\n"),
            "and its line was dropped"
        );
    }

    #[test]
    fn a_write_that_loses_a_cas_race_is_retried_on_the_new_value() {
        let process = Process::at_ms(1_000);
        let (first, second) = (FakeHost::new(&process), FakeHost::new(&process));
        assert!(record(&first, &keys(), 1, 1, process.now_ms()));
        let other = second.clone();
        let now = process.now_ms();
        first.before_next_write(move || assert!(record(&other, &keys(), 2, 1, now)));
        assert!(record(&first, &keys(), 1, 2, now));
        let lines = parse(process.shared(&keys().applied).unwrap().as_bytes());
        assert_eq!(
            lines.len(),
            2,
            "neither write lost the other's line: {lines:?}"
        );
        assert_eq!(behind(&first, &keys(), 2, now), 1);
    }
}
