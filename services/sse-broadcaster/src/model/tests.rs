use boifi_store::{Change, Snapshot, StoredPolicy, WatchEvent};

use super::*;
use crate::test_support::{policy, stored};

fn put(revision: u64, stored: StoredPolicy) -> WatchEvent {
    WatchEvent {
        revision,
        change: Change::Put(stored),
    }
}

fn rules_of(view: &PolicyView) -> usize {
    let policy: Policy = serde_json::from_str(view.json.get()).expect("effective JSON parses");
    assert_eq!(
        policy.spec.rules.len(),
        policy.status.as_ref().expect("status").rules.len()
    );
    policy.spec.rules.len()
}

#[test]
fn effective_removes_expired_rules_and_stamps_the_revision() {
    let stored = StoredPolicy {
        policy: policy("p", "reviews", &[Some(1_000), None, Some(2_000)]),
        revision: 42,
    };
    assert_eq!(rules_of(&effective(&stored, 999).unwrap()), 3);
    let view = effective(&stored, 1_000).unwrap();
    assert_eq!(rules_of(&view), 2);
    let policy: Policy = serde_json::from_str(view.json.get()).unwrap();
    let status = policy.status.unwrap();
    assert_eq!(status.revision, 42);
    assert_eq!(status.rules[1].expires_at_ms, Some(2_000));
    assert!(status.rules.iter().all(|rule| !rule.expired));

    let all_expire = StoredPolicy {
        policy: self::policy("q", "reviews", &[Some(1_000), Some(2_000)]),
        revision: 1,
    };
    assert!(effective(&all_expire, 1_999).is_some());
    assert!(effective(&all_expire, 2_000).is_none());
    // A policy without rules has nothing to expire and stays.
    let empty = StoredPolicy {
        policy: self::policy("e", "reviews", &[]),
        revision: 1,
    };
    assert!(effective(&empty, u64::MAX).is_some());
}

#[test]
fn apply_reports_old_and_new_views() {
    let mut model = Model::default();
    let deltas = model.apply(put(5, stored("p", "reviews", 5)), 0);
    let [Delta::Policy { name, new, old }] = &deltas[..] else {
        panic!("one policy delta: {deltas:?}")
    };
    assert_eq!(name, "p");
    assert!(old.is_none());
    assert_eq!(
        new.as_ref().unwrap().selector.service.as_deref(),
        Some("reviews")
    );
    assert_eq!(model.revision, 5);

    let deltas = model.apply(put(6, stored("p", "ratings", 6)), 0);
    let [Delta::Policy { new, old, .. }] = &deltas[..] else {
        panic!("{deltas:?}")
    };
    assert_eq!(
        old.as_ref().unwrap().selector.service.as_deref(),
        Some("reviews")
    );
    assert_eq!(
        new.as_ref().unwrap().selector.service.as_deref(),
        Some("ratings")
    );

    let deltas = model.apply(
        WatchEvent {
            revision: 7,
            change: Change::Delete { name: "p".into() },
        },
        0,
    );
    assert!(matches!(
        &deltas[..],
        [Delta::Policy {
            new: None,
            old: Some(_),
            ..
        }]
    ));
    assert!(model.policies().is_empty());

    // Deleting what clients never had tells nobody anything.
    let deltas = model.apply(
        WatchEvent {
            revision: 8,
            change: Change::Delete { name: "p".into() },
        },
        0,
    );
    assert!(deltas.is_empty());
    assert_eq!(model.revision, 8);

    let deltas = model.apply(
        WatchEvent {
            revision: 9,
            change: Change::Halt { halted: true },
        },
        0,
    );
    assert_eq!(deltas, [Delta::Halt(true)]);
    assert!(model.halted);
}

#[test]
fn expire_applies_each_expiry_once_at_its_time() {
    let mut model = Model::default();
    let p = StoredPolicy {
        policy: policy("p", "reviews", &[Some(1_000), Some(2_000)]),
        revision: 3,
    };
    model.apply(put(3, p), 500);
    model.apply(put(4, stored("forever", "reviews", 4)), 500);
    assert_eq!(model.next_expiry(), Some(1_000));
    assert!(model.expire(999).is_empty());

    let deltas = model.expire(1_000);
    let [Delta::Policy {
        new: Some(new),
        old: Some(old),
        ..
    }] = &deltas[..]
    else {
        panic!("{deltas:?}")
    };
    assert_eq!((rules_of(old), rules_of(new)), (2, 1));
    assert_eq!(model.next_expiry(), Some(2_000));
    assert!(model.expire(1_500).is_empty());

    let deltas = model.expire(2_500);
    assert!(matches!(
        &deltas[..],
        [Delta::Policy {
            new: None,
            old: Some(_),
            ..
        }]
    ));
    assert_eq!(model.next_expiry(), None);
    assert_eq!(model.policies().keys().collect::<Vec<_>>(), ["forever"]);
    // Expiry is not a store change.
    assert_eq!(model.revision, 4);
}

#[test]
fn a_put_after_its_expiry_is_already_filtered() {
    let mut model = Model::default();
    let late = StoredPolicy {
        policy: policy("late", "reviews", &[Some(1_000)]),
        revision: 2,
    };
    assert!(model.apply(put(2, late), 5_000).is_empty());
    assert!(model.policies().is_empty());
    assert!(model.expire(5_000).is_empty());
}

#[test]
fn replace_reports_only_differences() {
    let mut model = Model::default();
    model.apply(put(1, stored("keep", "a", 1)), 0);
    model.apply(put(2, stored("change", "a", 2)), 0);
    model.apply(put(3, stored("drop", "a", 3)), 0);
    let deltas = model.replace(
        Snapshot {
            revision: 10,
            halted: true,
            policies: vec![
                stored("change", "b", 9),
                stored("keep", "a", 1),
                stored("new", "a", 8),
            ],
        },
        0,
    );
    let mut seen: Vec<String> = deltas
        .iter()
        .map(|delta| match delta {
            Delta::Halt(halted) => format!("halt {halted}"),
            Delta::Policy { name, new, .. } => format!("{name} {}", new.is_some()),
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["change true", "drop false", "halt true", "new true"]);
    assert_eq!(model.revision, 10);
    assert_eq!(
        model.policies().keys().collect::<Vec<_>>(),
        ["change", "keep", "new"]
    );
}
