use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn sidecar() -> SidecarStatus {
    let now = SystemTime::now();
    SidecarStatus {
        pod: "reviews-v2-7d9f".into(),
        namespace: "demo".into(),
        workload: "reviews-v2".into(),
        labels: None,
        revision: 42,
        state: SidecarState::Current,
        behind_seconds: 0.0,
        first_seen: now,
        last_seen: now - Duration::from_secs(7),
        polling: false,
        injected: BTreeMap::from([
            (
                "a".to_owned(),
                FaultCounts {
                    abort: 10,
                    delay: 1,
                },
            ),
            ("b".to_owned(), FaultCounts { abort: 2, delay: 0 }),
        ]),
    }
}

#[test]
fn a_row_sums_the_counts_and_says_when_it_was_seen() {
    let s = sidecar();
    assert_eq!(
        row(&s, SystemTime::now()),
        [
            "reviews-v2-7d9f",
            "demo",
            "reviews-v2",
            "42",
            "current",
            "7s",
            "abort=12,delay=1"
        ]
    );
    let mut polling = s.clone();
    polling.polling = true;
    polling.injected.clear();
    polling.state = SidecarState::Behind;
    polling.behind_seconds = 3.25;
    let cells = row(&polling, SystemTime::now());
    assert_eq!(&cells[4..], ["behind 3.2s", "now", "-"]);
}

#[test]
fn enforcement_lines_name_the_laggards_and_how_many_more() {
    let enforcement = Enforcement {
        selected: 30,
        enforcing: 5,
        lagging: vec!["a".into(), "b".into()],
        lagging_count: 25,
        unreachable_replicas: 0,
    };
    assert_eq!(enforcing_line(&enforcement), "5 of 30 selected sidecars");
    assert_eq!(lagging_line(&enforcement), "a, b (and 23 more)");
    let none = Enforcement::default();
    assert_eq!(enforcing_line(&none), "no live sidecar is selected");
    assert_eq!(lagging_line(&none), "");
}
