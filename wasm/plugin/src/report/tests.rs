use std::collections::BTreeMap;

use boifi_policy::wire::{parse_injected, MAX_INJECTED_POLICIES};

use super::*;

/// Stat values as Envoy would give them back, by policy.
#[derive(Default)]
struct Stats(BTreeMap<String, FaultCounts>);

impl Stats {
    fn set(&mut self, policy: &str, abort: u64, delay: u64) {
        self.0
            .insert(policy.to_owned(), FaultCounts { abort, delay });
    }

    fn read(&self) -> impl FnMut(&mut Tracked) -> Option<FaultCounts> + '_ {
        |tracked| Some(self.0.get(&tracked.policy).copied().unwrap_or_default())
    }
}

/// Policies that can both abort and delay.
fn both<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, [bool; 2])> {
    names.into_iter().map(|n| (n, [true, true])).collect()
}

fn sent(header: Option<String>) -> BTreeMap<String, FaultCounts> {
    header.map_or_else(BTreeMap::new, |h| parse_injected(h.as_bytes()).unwrap())
}

#[test]
fn only_changed_counts_are_sent_until_acknowledged() {
    let mut reports = Reports::default();
    let mut stats = Stats::default();
    reports.track(both(["a", "b"]), 0);
    assert_eq!(reports.header(0, stats.read()), None, "nothing fired yet");
    stats.set("a", 1, 0);
    let header = reports.header(0, stats.read());
    assert_eq!(header.as_deref(), Some(r#"{"a":[1,0]}"#));
    // Lost: the same cumulative counts go again, with whatever changed since.
    reports.failed();
    stats.set("b", 0, 4);
    let again = sent(reports.header(0, stats.read()));
    assert_eq!(again.len(), 2);
    assert_eq!(again["a"], FaultCounts { abort: 1, delay: 0 });
    assert_eq!(again["b"], FaultCounts { abort: 0, delay: 4 });
    reports.answered();
    assert_eq!(reports.header(0, stats.read()), None);
    reports.answered();
    stats.set("a", 3, 0);
    assert_eq!(
        reports.header(0, stats.read()).as_deref(),
        Some(r#"{"a":[3,0]}"#)
    );
}

#[test]
fn at_most_64_policies_per_poll_and_each_gets_its_turn() {
    let names: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
    let mut reports = Reports::default();
    let mut stats = Stats::default();
    reports.track(both(names.iter().map(String::as_str)), 0);
    for name in &names {
        stats.set(name, 1, 0);
    }
    let first = sent(reports.header(0, stats.read()));
    assert_eq!(first.len(), MAX_INJECTED_POLICIES);
    reports.answered();
    let second = sent(reports.header(0, stats.read()));
    assert_eq!(second.len(), 100 - MAX_INJECTED_POLICIES);
    assert!(second.keys().all(|k| !first.contains_key(k)));
    reports.answered();
    assert_eq!(reports.header(0, stats.read()), None, "all acknowledged");

    // Everything keeps changing: the policies left out lead the next poll.
    for name in &names {
        stats.set(name, 2, 0);
    }
    let first = sent(reports.header(0, stats.read()));
    reports.answered();
    for name in &names {
        stats.set(name, 3, 0);
    }
    let second = sent(reports.header(0, stats.read()));
    let left_out: Vec<&String> = names.iter().filter(|n| !first.contains_key(*n)).collect();
    assert!(left_out.iter().all(|n| second.contains_key(*n)));
}

#[test]
fn a_policy_that_left_the_set_is_reported_to_the_end_then_forgotten() {
    let mut reports = Reports::default();
    let mut stats = Stats::default();
    reports.track(both(["a", "b"]), 0);
    stats.set("a", 5, 0);
    sent(reports.header(0, stats.read()));
    reports.answered();
    reports.track(both(["b"]), 1_000);
    // Another VM faults under the old set before it applies the new one.
    stats.set("a", 6, 0);
    assert_eq!(
        reports.header(1_010, stats.read()).as_deref(),
        Some(r#"{"a":[6,0]}"#)
    );
    reports.answered();
    assert_eq!(reports.header(1_500, stats.read()), None);
    assert_eq!(reports.tracked().collect::<Vec<_>>(), ["a", "b"], "grace");
    assert_eq!(reports.header(2_000, stats.read()), None);
    assert_eq!(reports.tracked().collect::<Vec<_>>(), ["b"]);
    // Unacknowledged counts keep a policy that left: they are sent until answered.
    reports.track(both(["c"]), 3_000);
    stats.set("b", 1, 1);
    assert_eq!(sent(reports.header(9_000, stats.read())).len(), 1);
    reports.failed();
    assert_eq!(sent(reports.header(9_000, stats.read())).len(), 1);
    assert_eq!(reports.tracked().collect::<Vec<_>>(), ["b", "c"]);
}

#[test]
fn unreadable_counts_are_skipped_not_forgotten() {
    let mut reports = Reports::default();
    reports.track(both(["a"]), 0);
    reports.track(both([]), 0);
    assert_eq!(reports.header(10_000, |_| None), None);
    assert_eq!(reports.tracked().count(), 1);
}

#[test]
fn stat_ids_are_kept_with_the_policy() {
    let mut reports = Reports::default();
    reports.track(both(["a"]), 0);
    let mut defined = 0;
    for _ in 0..3 {
        reports.header(0, |tracked| {
            if tracked.ids[0].is_none() {
                defined += 1;
                tracked.ids = [Some(1), Some(2)];
            }
            Some(FaultCounts::default())
        });
    }
    assert_eq!(defined, 1);
}

#[test]
fn tracking_is_bounded() {
    let mut reports = Reports::default();
    let first: Vec<String> = (0..MAX_TRACKED).map(|i| format!("a{i}")).collect();
    reports.track(both(first.iter().map(String::as_str)), 0);
    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    reports.track(both(second.iter().map(String::as_str)), 1);
    assert_eq!(reports.tracked().count(), MAX_TRACKED);
    assert!(
        reports.tracked().any(|p| p == "b9"),
        "room made for the new set"
    );
    let more: Vec<String> = (0..=MAX_TRACKED).map(|i| format!("c{i}")).collect();
    reports.track(both(more.iter().map(String::as_str)), 2);
    assert_eq!(reports.tracked().count(), MAX_TRACKED);
}

#[test]
fn fault_types_a_policy_could_inject_stay_tracked() {
    let mut reports = Reports::default();
    reports.track([("p", [true, false])], 0);
    let types = |reports: &mut Reports| {
        let mut seen = Vec::new();
        reports.header(0, |t| {
            seen.push(t.types);
            Some(FaultCounts::default())
        });
        seen
    };
    assert_eq!(types(&mut reports), [[true, false]]);
    // Now it only delays: its abort counter still counts what it did before.
    reports.track([("p", [false, true])], 1);
    assert_eq!(types(&mut reports), [[true, true]]);
}
