//! What the polling VM reports with each poll (`boifi_policy::wire::sidecars`): the sidecar's
//! identity, written once at configure, and the fault counts per policy that changed since the
//! last report the broadcaster answered.
//!
//! Counts are **cumulative and process-wide**: the polling VM reads them back from Envoy's
//! stats (`get_metric` on `boifi_faults_injected.*`), which every VM of the sidecar increments,
//! so a VM that never faulted a request still reports the faults of the others, and the numbers
//! are the ones Envoy's stats (hence Prometheus) show. A report that is lost costs nothing: its
//! counts go again with the next poll. Nothing here runs on the request path.
//!
//! [`Reports`] tracks the policies whose counts may change: those of the current set, and
//! those that left it until their last counts were answered. At most
//! [`boifi_policy::wire::MAX_INJECTED_POLICIES`] go per poll; the next poll starts after the last one sent,
//! so with more changes than fit every policy gets its turn.

use boifi_policy::wire::{FaultCounts, InjectedHeader};

/// Most policies tracked: the largest policy set plus as many that just left it.
pub const MAX_TRACKED: usize = 2 * crate::poll::MAX_POLICIES;
/// How long a policy that left the set is still read: the other VMs of the sidecar apply a
/// new set up to [`crate::lease::SYNC_MS`] later and may fault under the old one until then.
pub const LEFT_GRACE_MS: u64 = 1_000;

/// A policy whose counts are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub policy: String,
    /// Whether its rules can abort and delay (in that order), in any version seen: only those
    /// counters are read (reading defines them, and Prometheus would show the others at 0).
    pub types: [bool; 2],
    /// Stat ids of its abort and delay counters in this VM, once defined.
    pub ids: [Option<u32>; 2],
    /// The counts the broadcaster last acknowledged.
    reported: FaultCounts,
    /// When it left the policy set in use (`None`: in it). It is dropped once its counts are
    /// acknowledged and [`LEFT_GRACE_MS`] passed.
    left_at_ms: Option<u64>,
}

/// The report state of the polling VM.
#[derive(Debug, Default)]
pub struct Reports {
    tracked: Vec<Tracked>,
    /// Index in `tracked` where the next header starts.
    cursor: usize,
    /// The counts sent with the poll in flight.
    in_flight: Vec<(String, FaultCounts)>,
}

impl Reports {
    /// The policies of the set applied at `now_ms`, each with the fault types its rules can
    /// inject (`[abort, delay]`): tracked from now on; the others are kept until their last
    /// counts are acknowledged.
    pub fn track<'a>(
        &mut self,
        policies: impl IntoIterator<Item = (&'a str, [bool; 2])>,
        now_ms: u64,
    ) {
        for tracked in &mut self.tracked {
            tracked.left_at_ms.get_or_insert(now_ms);
        }
        for (policy, types) in policies {
            match self.tracked.iter_mut().find(|t| t.policy == policy) {
                Some(tracked) => {
                    tracked.left_at_ms = None;
                    // A type it could inject before keeps its counter.
                    tracked.types = [tracked.types[0] || types[0], tracked.types[1] || types[1]];
                }
                None => {
                    if self.tracked.len() == MAX_TRACKED {
                        // Make room by forgetting a policy that left the set.
                        let Some(gone) = self.tracked.iter().position(|t| t.left_at_ms.is_some())
                        else {
                            continue;
                        };
                        self.tracked.remove(gone);
                    }
                    self.tracked.push(Tracked {
                        policy: policy.to_owned(),
                        types,
                        ids: [None, None],
                        reported: FaultCounts::default(),
                        left_at_ms: None,
                    });
                }
            }
        }
        self.cursor = self.cursor.min(self.tracked.len());
    }

    /// The policies tracked, for looking at.
    pub fn tracked(&self) -> impl Iterator<Item = &str> {
        self.tracked.iter().map(|t| t.policy.as_str())
    }

    /// The [`boifi_policy::wire::INJECTED_HEADER`] value for the next poll: the policies whose counts (as
    /// `read` finds them now; `None` when the host cannot tell) differ from those acknowledged,
    /// as many as fit. `None` when nothing changed. Policies that left the set over
    /// [`LEFT_GRACE_MS`] before `now_ms` and whose counts were all acknowledged are forgotten.
    pub fn header(
        &mut self,
        now_ms: u64,
        mut read: impl FnMut(&mut Tracked) -> Option<FaultCounts>,
    ) -> Option<String> {
        self.in_flight.clear();
        let count = self.tracked.len();
        let mut header = InjectedHeader::default();
        let mut settled = vec![false; count];
        let mut next = self.cursor;
        for step in 0..count {
            let at = (self.cursor + step) % count;
            let tracked = &mut self.tracked[at];
            let Some(now) = read(tracked) else {
                continue;
            };
            if now == tracked.reported {
                settled[at] = tracked
                    .left_at_ms
                    .is_some_and(|left| now_ms >= left.saturating_add(LEFT_GRACE_MS));
                continue;
            }
            if !header.push(&tracked.policy, now) {
                // Full: this one leads the next poll.
                next = at;
                break;
            }
            self.in_flight.push((tracked.policy.clone(), now));
            next = (at + 1) % count;
        }
        let mut index = 0;
        self.tracked.retain(|_| {
            index += 1;
            !settled[index - 1]
        });
        self.cursor = next.min(self.tracked.len());
        header.finish()
    }

    /// The poll that carried the last header was answered: its counts are acknowledged.
    pub fn answered(&mut self) {
        for (policy, counts) in self.in_flight.drain(..) {
            if let Some(tracked) = self.tracked.iter_mut().find(|t| t.policy == policy) {
                tracked.reported = counts;
            }
        }
    }

    /// The poll failed: its counts go again with the next one.
    pub fn failed(&mut self) {
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests;
