//! The PolicyStore behaviour suite: the same cases run against the embedded store (temp dir)
//! and etcd (a real etcd started per test on free loopback ports).
//!
//! Every await on a watch stream has a deadline, so a bug fails the test instead of hanging.

use std::time::Duration;

use boifi_policy::{Policy, PolicyStatus, ValidPolicy};
use boifi_store::{
    Attribution, AuditAction, AuditEntry, AuditQuery, AuditRetention, Change, PolicyStore,
    Precondition, Revision, StoreError, StoredPolicy, WatchEvent, WatchStream,
};
use futures::StreamExt;

const STREAM_DEADLINE: Duration = Duration::from_secs(10);
/// 2024-01-01T00:00:00Z: the server time of the suite's changes.
const T0_MS: u64 = 1_704_067_200_000;
const HOUR_MS: u64 = 3_600_000;

/// Who the suite's changes are by, unless a case says otherwise.
fn by() -> Attribution {
    by_at("suite", None, T0_MS)
}

fn by_at(actor: &str, reason: Option<&str>, at_ms: u64) -> Attribution {
    Attribution::new(actor, reason, at_ms).expect("valid attribution")
}

/// The whole visible trail at `now_ms`, newest first, read in pages of `limit`.
async fn trail(store: &dyn PolicyStore, now_ms: u64, limit: usize) -> Vec<AuditEntry> {
    let mut query = AuditQuery::newest(limit, now_ms);
    let mut all = Vec::new();
    for _ in 0..1000 {
        let page = store.audit(&query).await.expect("audit read");
        assert!(
            page.entries.len() <= limit,
            "a page holds at most its limit"
        );
        all.extend(page.entries);
        match page.next {
            Some(next) => query.before = Some(next),
            None => return all,
        }
    }
    panic!("the trail's pages never end");
}

fn entry(
    revision: Revision,
    at: &Attribution,
    action: AuditAction,
    policy: Option<&str>,
) -> AuditEntry {
    at.entry(revision, action, policy)
}

fn policy(name: &str, version: &str) -> ValidPolicy {
    let policy: Policy = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "version": version },
        "spec": {
            "selector": { "namespace": "demo", "service": "reviews" },
            "rules": [ {
                "match": { "path": { "prefix": "/api" } },
                "fault": { "percentage": 50, "abort": { "httpStatus": 503 } }
            } ]
        }
    }))
    .expect("test policy parses");
    ValidPolicy::try_from(policy).expect("test policy is valid")
}

/// What a reader gets back for `policy` written at `revision`.
fn stored(policy: &Policy, revision: Revision) -> StoredPolicy {
    let mut policy = policy.clone();
    policy
        .status
        .get_or_insert_with(PolicyStatus::default)
        .revision = revision;
    StoredPolicy { policy, revision }
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(STREAM_DEADLINE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no watch event within {STREAM_DEADLINE:?}"),
    }
}

async fn watch(store: &dyn PolicyStore, after: Revision) -> WatchStream {
    tokio::time::timeout(STREAM_DEADLINE, store.watch(after))
        .await
        .expect("watch() answers in time")
        .expect("watch() succeeds")
}

/// Asserts the stream yields exactly `expected`, in order, and nothing in between: after the
/// expected events, a marker write must be the very next event. Returns the marker's event.
async fn expect_exactly(
    store: &dyn PolicyStore,
    stream: &mut WatchStream,
    expected: &[WatchEvent],
) -> WatchEvent {
    for want in expected {
        assert_eq!(&next_event(stream).await, want);
    }
    let marker = store.set_halted(false, &by()).await.expect("marker write");
    let want = WatchEvent {
        revision: marker,
        change: Change::Halt { halted: false },
    };
    assert_eq!(
        next_event(stream).await,
        want,
        "an unexpected event came before the marker"
    );
    want
}

/// The behaviour every store must have. Each case takes a fresh, empty store.
mod cases {
    use super::*;

    pub async fn put_get_snapshot_delete(store: &dyn PolicyStore) {
        let empty = store.snapshot().await.unwrap();
        assert!(empty.policies.is_empty());
        assert!(!empty.halted);
        assert_eq!(store.get("b").await.unwrap(), None);

        let b = policy("b", "1");
        let put_b = store.put(&b, Precondition::None, &by()).await.unwrap();
        assert!(put_b.created);
        assert!(put_b.revision > empty.revision);
        assert_eq!(
            store.get("b").await.unwrap(),
            Some(stored(&b, put_b.revision))
        );

        let a = policy("a", "1");
        let put_a = store.put(&a, Precondition::None, &by()).await.unwrap();
        assert!(put_a.created);

        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, put_a.revision);
        assert_eq!(
            snapshot.policies,
            vec![stored(&a, put_a.revision), stored(&b, put_b.revision)],
            "sorted by name, each with its own revision"
        );

        let a2 = policy("a", "2");
        let replace = store.put(&a2, Precondition::None, &by()).await.unwrap();
        assert!(!replace.created, "replacing is not creating");
        assert!(replace.revision > put_a.revision);
        let got = store.get("a").await.unwrap().unwrap();
        assert_eq!(got, stored(&a2, replace.revision));
        assert_eq!(got.policy.status.unwrap().revision, replace.revision);

        let deleted = store.delete("a", Precondition::None, &by()).await.unwrap();
        assert!(matches!(deleted, Some(r) if r > replace.revision));
        assert_eq!(store.get("a").await.unwrap(), None);
        assert_eq!(
            store.delete("a", Precondition::None, &by()).await.unwrap(),
            None
        );

        let after = store.snapshot().await.unwrap();
        assert_eq!(after.policies, vec![stored(&b, put_b.revision)]);
        assert_eq!(Some(after.revision), deleted);
    }

    pub async fn status_sent_by_a_client_is_kept_but_revision_is_the_stores(
        store: &dyn PolicyStore,
    ) {
        let mut p = policy("with-status", "1").into_policy();
        p.status = Some(PolicyStatus {
            revision: 999_999,
            created_at_ms: 1_700_000_000_000,
            ..PolicyStatus::default()
        });
        let p = ValidPolicy::try_from(p).expect("status is not checked");
        let put = store.put(&p, Precondition::None, &by()).await.unwrap();
        let got = store.get("with-status").await.unwrap().unwrap();
        let status = got.policy.status.unwrap();
        assert_eq!(status.revision, put.revision);
        assert_eq!(status.created_at_ms, 1_700_000_000_000);
    }

    pub async fn preconditions(store: &dyn PolicyStore) {
        let p = policy("p", "1");
        let first = store.put(&p, Precondition::Absent, &by()).await.unwrap();
        assert!(first.created);

        let err = store
            .put(&p, Precondition::Absent, &by())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: Some(r) } if r == first.revision),
            "{err:?}"
        );

        let second = store
            .put(
                &policy("p", "2"),
                Precondition::Revision(first.revision),
                &by(),
            )
            .await
            .unwrap();
        assert!(!second.created);

        let err = store
            .put(
                &policy("p", "3"),
                Precondition::Revision(first.revision),
                &by(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: Some(r) } if r == second.revision),
            "stale revision: {err:?}"
        );
        assert_eq!(
            store
                .get("p")
                .await
                .unwrap()
                .unwrap()
                .policy
                .metadata
                .version
                .as_deref(),
            Some("2"),
            "a failed precondition writes nothing"
        );

        let err = store
            .put(
                &policy("missing", "1"),
                Precondition::Revision(second.revision),
                &by(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: None }),
            "{err:?}"
        );
        assert_eq!(store.get("missing").await.unwrap(), None);

        let err = store
            .delete("p", Precondition::Revision(first.revision), &by())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: Some(r) } if r == second.revision),
            "{err:?}"
        );
        let err = store
            .delete("p", Precondition::Absent, &by())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: Some(_) }),
            "{err:?}"
        );
        assert!(store.get("p").await.unwrap().is_some());

        let deleted = store
            .delete("p", Precondition::Revision(second.revision), &by())
            .await
            .unwrap();
        assert!(matches!(deleted, Some(r) if r > second.revision));
        let err = store
            .delete("p", Precondition::Revision(second.revision), &by())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: None }),
            "{err:?}"
        );
        assert_eq!(
            store
                .delete("p", Precondition::Absent, &by())
                .await
                .unwrap(),
            None
        );
    }

    pub async fn concurrent_creates_have_one_winner(store: &dyn PolicyStore) {
        let p = policy("race", "1");
        let by = by();
        let attempts = (0..8).map(|_| store.put(&p, Precondition::Absent, &by));
        let results = futures::future::join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict { current: Some(_) })))
            .count();
        assert_eq!((won, conflicts), (1, 7), "{results:?}");
    }

    pub async fn halt(store: &dyn PolicyStore) {
        assert!(!store.snapshot().await.unwrap().halted);
        assert!(
            !store.halt_state().await.unwrap().0,
            "never set: not halted"
        );
        let on = store.set_halted(true, &by()).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert!(snapshot.halted);
        assert_eq!(snapshot.revision, on);
        assert_eq!(store.halt_state().await.unwrap(), (true, on));
        let off = store.set_halted(false, &by()).await.unwrap();
        assert!(off > on);
        assert!(!store.snapshot().await.unwrap().halted);
        // The revision is the store's, not the halt key's: a later policy write moves it.
        let put = store
            .put(&policy("after-halt", "1"), Precondition::None, &by())
            .await
            .unwrap();
        assert_eq!(store.halt_state().await.unwrap(), (false, put.revision));
    }

    pub async fn revisions_strictly_increase(store: &dyn PolicyStore) {
        let mut last = store.snapshot().await.unwrap().revision;
        for i in 0..5 {
            let name = format!("p{i}");
            let revisions = [
                store
                    .put(&policy(&name, "1"), Precondition::None, &by())
                    .await
                    .unwrap()
                    .revision,
                store.set_halted(i % 2 == 0, &by()).await.unwrap(),
                store
                    .put(&policy(&name, "2"), Precondition::None, &by())
                    .await
                    .unwrap()
                    .revision,
                store
                    .delete(&name, Precondition::None, &by())
                    .await
                    .unwrap()
                    .unwrap(),
            ];
            for revision in revisions {
                assert!(revision > last, "{revision} after {last}");
                last = revision;
            }
        }
        assert_eq!(store.snapshot().await.unwrap().revision, last);
    }

    pub async fn audit_records_every_change_with_its_revision(store: &dyn PolicyStore) {
        assert!(trail(store, T0_MS, 10).await.is_empty());
        let alice = by_at("alice", Some("incident 7"), T0_MS);
        let bob = by_at("bob", None, T0_MS + 1000);
        let created = store
            .put(&policy("a", "1"), Precondition::Absent, &alice)
            .await
            .unwrap();
        let replaced = store
            .put(&policy("a", "2"), Precondition::None, &bob)
            .await
            .unwrap();
        let unconditional_create = store
            .put(&policy("b", "1"), Precondition::None, &bob)
            .await
            .unwrap();
        assert!(unconditional_create.created);
        let halted = store.set_halted(true, &alice).await.unwrap();
        let deleted = store
            .delete("a", Precondition::Revision(replaced.revision), &bob)
            .await
            .unwrap()
            .unwrap();
        let resumed = store.set_halted(false, &bob).await.unwrap();
        let expected = vec![
            entry(resumed, &bob, AuditAction::Resume, None),
            entry(deleted, &bob, AuditAction::Delete, Some("a")),
            entry(halted, &alice, AuditAction::Halt, None),
            entry(
                unconditional_create.revision,
                &bob,
                AuditAction::Create,
                Some("b"),
            ),
            entry(replaced.revision, &bob, AuditAction::Replace, Some("a")),
            entry(created.revision, &alice, AuditAction::Create, Some("a")),
        ];
        assert_eq!(trail(store, T0_MS, 100).await, expected);
        assert_eq!(trail(store, T0_MS, 1).await, expected, "in pages of one");
        assert_eq!(
            store.snapshot().await.unwrap().revision,
            resumed,
            "the trail adds no revisions of its own"
        );
    }

    pub async fn refused_and_empty_changes_leave_no_entry(store: &dyn PolicyStore) {
        let first = store
            .put(&policy("p", "1"), Precondition::Absent, &by())
            .await
            .unwrap();
        let mallory = by_at("mallory", Some("should not appear"), T0_MS);
        let stale = first.revision + 100;
        let refused = [
            store
                .put(&policy("p", "2"), Precondition::Absent, &mallory)
                .await,
            store
                .put(&policy("p", "2"), Precondition::Revision(stale), &mallory)
                .await,
            store
                .put(
                    &policy("q", "1"),
                    Precondition::Revision(first.revision),
                    &mallory,
                )
                .await,
        ];
        for result in refused {
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "{result:?}"
            );
        }
        for precondition in [Precondition::Revision(stale), Precondition::Absent] {
            let result = store.delete("p", precondition, &mallory).await;
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "{result:?}"
            );
        }
        assert_eq!(
            store
                .delete("absent", Precondition::None, &mallory)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .delete("absent", Precondition::Absent, &mallory)
                .await
                .unwrap(),
            None
        );
        let trail = trail(store, T0_MS, 100).await;
        assert_eq!(
            trail,
            vec![entry(first.revision, &by(), AuditAction::Create, Some("p"))]
        );
        // The next change's entry follows on as if nothing had been tried.
        let next = store.set_halted(true, &by()).await.unwrap();
        let newest = super::trail(store, T0_MS, 1).await;
        assert_eq!(newest[0], entry(next, &by(), AuditAction::Halt, None));
    }

    pub async fn audit_pages_and_filters(store: &dyn PolicyStore) {
        let (alice, bob) = (by_at("alice", None, T0_MS), by_at("bob", None, T0_MS));
        let mut revisions = Vec::new();
        for i in 0..7 {
            let who = if i % 2 == 0 { &alice } else { &bob };
            let name = format!("p{}", i % 3);
            revisions.push(
                store
                    .put(&policy(&name, &i.to_string()), Precondition::None, who)
                    .await
                    .unwrap()
                    .revision,
            );
        }
        revisions.push(store.set_halted(true, &bob).await.unwrap());
        revisions.reverse();
        let all = trail(store, T0_MS, 3).await;
        let got: Vec<Revision> = all.iter().map(|e| e.revision).collect();
        assert_eq!(got, revisions, "newest first, every entry once");

        let mut query = AuditQuery::newest(2, T0_MS);
        query.policy = Some("p1".into());
        let page = store.audit(&query).await.unwrap();
        let names: Vec<(Option<&str>, AuditAction)> = page
            .entries
            .iter()
            .map(|e| (e.policy.as_deref(), e.action))
            .collect();
        assert_eq!(
            names,
            [
                (Some("p1"), AuditAction::Replace),
                (Some("p1"), AuditAction::Create)
            ]
        );
        assert_eq!(page.next, None, "p1 was written twice");

        let mut query = AuditQuery::newest(10, T0_MS);
        query.actor = Some("bob".into());
        query.action = Some(AuditAction::Halt);
        let page = store.audit(&query).await.unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].revision, revisions[0]);

        let mut query = AuditQuery::newest(10, T0_MS);
        query.actor = Some("alice".into());
        query.action = Some(AuditAction::Replace);
        let page = store.audit(&query).await.unwrap();
        let got: Vec<Revision> = page.entries.iter().map(|e| e.revision).collect();
        // alice wrote p0 (create), p2 (create), p1 (replace, i=4), p0 (replace, i=6).
        assert_eq!(got, [revisions[1], revisions[3]]);
    }

    /// Retention: the newest 5 entries.
    pub async fn retention_by_count(store: &dyn PolicyStore) {
        let mut revisions = Vec::new();
        for i in 0..23 {
            revisions.push(store.set_halted(i % 2 == 0, &by()).await.unwrap());
        }
        let got: Vec<Revision> = trail(store, T0_MS, 2)
            .await
            .iter()
            .map(|e| e.revision)
            .collect();
        let newest: Vec<Revision> = revisions.iter().rev().take(5).copied().collect();
        assert_eq!(got, newest);
    }

    /// Retention: one hour.
    pub async fn retention_by_age(store: &dyn PolicyStore) {
        for i in 0..4 {
            store
                .put(&policy("old", &i.to_string()), Precondition::None, &by())
                .await
                .unwrap();
        }
        // Read at the hour's end, everything is still there; a moment later, nothing.
        assert_eq!(trail(store, T0_MS + HOUR_MS, 10).await.len(), 4);
        assert!(trail(store, T0_MS + HOUR_MS + 1, 10).await.is_empty());
        let later = by_at("later", Some("after the hour"), T0_MS + 2 * HOUR_MS);
        let mut kept = Vec::new();
        for _ in 0..3 {
            kept.push(store.set_halted(true, &later).await.unwrap());
        }
        kept.reverse();
        let got: Vec<Revision> = trail(store, T0_MS + 2 * HOUR_MS, 10)
            .await
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(got, kept);
    }

    /// Writes a fixed history and returns (revision before it, its events).
    async fn write_history(store: &dyn PolicyStore) -> (Revision, Vec<WatchEvent>) {
        let start = store.snapshot().await.unwrap().revision;
        let (a1, b1, a2) = (policy("a", "1"), policy("b", "1"), policy("a", "2"));
        let mut events = Vec::new();
        let r = store
            .put(&a1, Precondition::None, &by())
            .await
            .unwrap()
            .revision;
        events.push(WatchEvent {
            revision: r,
            change: Change::Put(stored(&a1, r)),
        });
        let r = store
            .put(&b1, Precondition::Absent, &by())
            .await
            .unwrap()
            .revision;
        events.push(WatchEvent {
            revision: r,
            change: Change::Put(stored(&b1, r)),
        });
        let r = store.set_halted(true, &by()).await.unwrap();
        events.push(WatchEvent {
            revision: r,
            change: Change::Halt { halted: true },
        });
        let r = store
            .put(&a2, Precondition::None, &by())
            .await
            .unwrap()
            .revision;
        events.push(WatchEvent {
            revision: r,
            change: Change::Put(stored(&a2, r)),
        });
        let r = store
            .delete("b", Precondition::None, &by())
            .await
            .unwrap()
            .unwrap();
        events.push(WatchEvent {
            revision: r,
            change: Change::Delete { name: "b".into() },
        });
        let r = store.set_halted(false, &by()).await.unwrap();
        events.push(WatchEvent {
            revision: r,
            change: Change::Halt { halted: false },
        });
        (start, events)
    }

    pub async fn watch_from_r_yields_exactly_the_later_changes(store: &dyn PolicyStore) {
        let (start, mut events) = write_history(store).await;
        let mut froms = vec![start];
        froms.extend(events.iter().map(|e| e.revision));
        for after in froms {
            let mut stream = watch(store, after).await;
            let expected: Vec<WatchEvent> = events
                .iter()
                .filter(|e| e.revision > after)
                .cloned()
                .collect();
            // Each round's marker is part of the history the next rounds must see.
            let marker = expect_exactly(store, &mut stream, &expected).await;
            events.push(marker);
        }
    }

    pub async fn watch_from_zero_yields_everything(store: &dyn PolicyStore) {
        let (_, events) = write_history(store).await;
        let mut stream = watch(store, 0).await;
        expect_exactly(store, &mut stream, &events).await;
    }

    pub async fn live_events_after_subscribe(store: &dyn PolicyStore) {
        let current = store.snapshot().await.unwrap().revision;
        let mut stream = watch(store, current).await;
        let (start, events) = write_history(store).await;
        assert_eq!(start, current);
        expect_exactly(store, &mut stream, &events).await;
    }

    pub async fn resume_from_last_seen_revision(store: &dyn PolicyStore) {
        let (start, events) = write_history(store).await;
        let mut first = watch(store, start).await;
        let seen = [next_event(&mut first).await, next_event(&mut first).await];
        assert_eq!(&seen[..], &events[..2]);
        drop(first);
        let mut resumed = watch(store, seen[1].revision).await;
        expect_exactly(store, &mut resumed, &events[2..]).await;
    }

    /// Before a restart: what must be there after it.
    pub async fn write_before_restart(store: &dyn PolicyStore) -> (Revision, Vec<WatchEvent>) {
        let (start, events) = write_history(store).await;
        // Leave state that differs from the default: one policy, halted.
        let keep = policy("kept", "1");
        let r = store
            .put(&keep, Precondition::None, &by())
            .await
            .unwrap()
            .revision;
        let mut all = events;
        all.push(WatchEvent {
            revision: r,
            change: Change::Put(stored(&keep, r)),
        });
        let r = store.set_halted(true, &by()).await.unwrap();
        all.push(WatchEvent {
            revision: r,
            change: Change::Halt { halted: true },
        });
        (start, all)
    }

    pub async fn check_after_restart(
        store: &dyn PolicyStore,
        (start, events): (Revision, Vec<WatchEvent>),
    ) {
        let last = events.last().unwrap().revision;
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, last);
        assert!(snapshot.halted);
        let a = policy("a", "2");
        let kept = policy("kept", "1");
        let rev_of = |name: &str| {
            events
                .iter()
                .rev()
                .find_map(|e| match &e.change {
                    Change::Put(s) if s.policy.metadata.name == name => Some(e.revision),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(
            snapshot.policies,
            vec![stored(&a, rev_of("a")), stored(&kept, rev_of("kept"))]
        );
        let next = store
            .put(&policy("new", "1"), Precondition::None, &by())
            .await
            .unwrap();
        assert!(
            next.revision > last,
            "revisions keep growing after a restart"
        );
        assert!(next.created);
        // A watcher resuming from before the restart still gets every change.
        let mut stream = watch(store, start).await;
        let mut expected = events;
        let new = policy("new", "1");
        expected.push(WatchEvent {
            revision: next.revision,
            change: Change::Put(stored(&new, next.revision)),
        });
        expect_exactly(store, &mut stream, &expected).await;
    }

    /// The stream must end with `Err` once the store goes away, not hang.
    pub async fn expect_watch_breaks(mut stream: WatchStream) {
        loop {
            match tokio::time::timeout(STREAM_DEADLINE, stream.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(StoreError::Unavailable(_)))) => break,
                Ok(Some(Err(e))) => panic!("expected Unavailable, got {e:?}"),
                Ok(None) => panic!("watch ended without an error"),
                Err(_) => panic!("watch still open {STREAM_DEADLINE:?} after the store went away"),
            }
        }
        let end = tokio::time::timeout(STREAM_DEADLINE, stream.next()).await;
        assert!(matches!(end, Ok(None)), "the stream ends after its error");
    }
}

/// Runs each named case against a fresh store of each kind.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod embedded_suite {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = super::embedded::Backend::new();
                    super::cases::$case(backend.store()).await;
                }
            )*
        }
        mod etcd_suite {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = super::etcd::Backend::new().await;
                    super::cases::$case(backend.store()).await;
                }
            )*
        }
    };
}

suite!(
    audit_records_every_change_with_its_revision,
    refused_and_empty_changes_leave_no_entry,
    audit_pages_and_filters,
    put_get_snapshot_delete,
    status_sent_by_a_client_is_kept_but_revision_is_the_stores,
    preconditions,
    concurrent_creates_have_one_winner,
    halt,
    revisions_strictly_increase,
    watch_from_r_yields_exactly_the_later_changes,
    watch_from_zero_yields_everything,
    live_events_after_subscribe,
    resume_from_last_seen_revision,
);

/// Runs each case against a fresh store of each kind with the given audit retention.
macro_rules! retention_suite {
    ($($case:ident: $retention:expr),* $(,)?) => {
        mod embedded_retention {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = super::embedded::Backend::with_retention($retention);
                    super::cases::$case(backend.store()).await;
                }
            )*
        }
        mod etcd_retention {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = super::etcd::Backend::with_retention($retention).await;
                    super::cases::$case(backend.store()).await;
                }
            )*
        }
    };
}

retention_suite!(
    retention_by_count: AuditRetention {
        max_entries: 5,
        ..AuditRetention::default()
    },
    retention_by_age: AuditRetention {
        max_age: Duration::from_millis(HOUR_MS),
        ..AuditRetention::default()
    },
);

mod embedded {
    use super::*;
    use boifi_store::EmbeddedStore;
    use tempfile::TempDir;

    pub struct Backend {
        dir: TempDir,
        store: Option<EmbeddedStore>,
    }

    impl Backend {
        pub fn new() -> Self {
            Backend::with_retention(AuditRetention::default())
        }

        pub fn with_retention(retention: AuditRetention) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Some(EmbeddedStore::open_with_retention(dir.path(), retention).unwrap());
            Backend { dir, store }
        }

        pub fn store(&self) -> &dyn PolicyStore {
            self.store.as_ref().expect("store is open")
        }

        fn reopen(&mut self) {
            self.store = None;
            self.store = Some(EmbeddedStore::open(self.dir.path()).unwrap());
        }
    }

    #[tokio::test]
    async fn restart_keeps_everything() {
        let mut backend = Backend::new();
        let written = cases::write_before_restart(backend.store()).await;
        backend.reopen();
        cases::check_after_restart(backend.store(), written).await;
    }

    #[tokio::test]
    async fn watch_ends_with_err_when_the_store_closes() {
        let mut backend = Backend::new();
        let stream = watch(backend.store(), 0).await;
        backend.store = None;
        cases::expect_watch_breaks(stream).await;
    }
}

mod etcd {
    use super::*;
    use boifi_store::{EtcdConfig, EtcdStore};
    use boifi_tests::EtcdServer;

    pub struct Backend {
        server: EtcdServer,
        store: EtcdStore,
    }

    pub fn config(endpoint: String) -> EtcdConfig {
        let mut config = EtcdConfig::new(vec![endpoint], "/boifi-test/");
        config.request_timeout = Duration::from_secs(3);
        config.connect_timeout = Duration::from_secs(1);
        config
    }

    /// Another store on the same etcd and prefix, as a second policy-api replica has.
    async fn replica(server: &EtcdServer, retention: AuditRetention) -> EtcdStore {
        let mut config = config(server.endpoint());
        config.audit_retention = retention;
        EtcdStore::connect(config).await.unwrap()
    }

    /// The audit entries etcd holds, trimmed or not.
    async fn stored_entries(server: &EtcdServer) -> usize {
        let mut client = etcd_client::Client::connect([server.endpoint()], None)
            .await
            .unwrap();
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let response = client
            .get("/boifi-test/audit/entries/", Some(options))
            .await
            .unwrap();
        usize::try_from(response.count()).unwrap()
    }

    #[tokio::test]
    async fn trimmed_entries_are_deleted_not_only_hidden() {
        let retention = AuditRetention {
            max_entries: 5,
            max_age: Duration::from_millis(HOUR_MS),
        };
        let backend = Backend::with_retention(retention).await;
        let store = backend.store();
        for i in 0..9 {
            store.set_halted(i % 2 == 0, &by()).await.unwrap();
            assert_eq!(stored_entries(&backend.server).await, (i + 1).min(5));
        }
        // An hour later, the old entries go a batch per write: the first write finds them
        // (the read at the end of its transaction), the next one deletes them.
        let later = by_at("later", None, T0_MS + 2 * HOUR_MS);
        store.set_halted(true, &later).await.unwrap();
        assert_eq!(stored_entries(&backend.server).await, 5);
        store.set_halted(true, &later).await.unwrap();
        assert_eq!(stored_entries(&backend.server).await, 2);
        assert_eq!(trail(store, T0_MS + 2 * HOUR_MS, 10).await.len(), 2);
    }

    #[tokio::test]
    async fn replicas_writing_at_once_each_get_every_entry_in_order() {
        let retention = AuditRetention {
            max_entries: 30,
            ..AuditRetention::default()
        };
        let backend = Backend::with_retention(retention).await;
        let (a, b) = (backend.store(), replica(&backend.server, retention).await);
        // b's first write finds the head a moved: it goes round once.
        let first = a.set_halted(true, &by_at("a", None, T0_MS)).await.unwrap();
        let second = b.set_halted(true, &by_at("b", None, T0_MS)).await.unwrap();
        assert!(second > first);
        assert_eq!(b.audit_retries(), 1);

        let writes = (0..12).map(|i| {
            let (store, actor): (&dyn PolicyStore, &str) =
                if i % 2 == 0 { (a, "a") } else { (&b, "b") };
            async move {
                let name = format!("p{i}");
                let written = store
                    .put(
                        &policy(&name, "1"),
                        Precondition::None,
                        &by_at(actor, None, T0_MS),
                    )
                    .await
                    .unwrap();
                (written.revision, name)
            }
        });
        let mut written = futures::future::join_all(writes).await;
        written.sort();
        written.reverse();
        let trail = trail(a, T0_MS, 5).await;
        let got: Vec<(Revision, String)> = trail
            .iter()
            .take(12)
            .map(|e| (e.revision, e.policy.clone().unwrap()))
            .collect();
        assert_eq!(got, written, "one entry per write, newest first");
        assert_eq!(trail.len(), 14);

        // Both trim with 30 kept: after 40 more writes, 30 remain, whoever wrote last.
        for i in 0..40 {
            let store: &dyn PolicyStore = if i % 3 == 0 { a } else { &b };
            store.set_halted(i % 2 == 0, &by()).await.unwrap();
        }
        assert_eq!(stored_entries(&backend.server).await, 30);
        assert_eq!(super::trail(&b, T0_MS, 100).await.len(), 30);
    }

    impl Backend {
        pub async fn new() -> Self {
            Backend::with_retention(AuditRetention::default()).await
        }

        pub async fn with_retention(retention: AuditRetention) -> Self {
            let server = tokio::task::spawn_blocking(EtcdServer::start)
                .await
                .unwrap();
            let store = replica(&server, retention).await;
            Backend { server, store }
        }

        pub fn store(&self) -> &dyn PolicyStore {
            &self.store
        }
    }

    #[tokio::test]
    async fn restart_keeps_everything() {
        let mut backend = Backend::new().await;
        let written = cases::write_before_restart(backend.store()).await;
        backend.server.restart();
        backend.store = EtcdStore::connect(config(backend.server.endpoint()))
            .await
            .unwrap();
        cases::check_after_restart(backend.store(), written).await;
    }

    #[tokio::test]
    async fn watch_ends_with_err_when_etcd_stops() {
        let mut backend = Backend::new().await;
        let mut stream = watch(backend.store(), 0).await;
        let r = backend.store().set_halted(true, &by()).await.unwrap();
        assert_eq!(next_event(&mut stream).await.revision, r, "watch is live");
        backend.server.stop();
        cases::expect_watch_breaks(stream).await;
    }

    #[tokio::test]
    async fn unreachable_etcd_is_unavailable_quickly() {
        let mut backend = Backend::new().await;
        backend.server.stop();
        let started = std::time::Instant::now();
        let err = backend.store().ping().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = backend.store().snapshot().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        // Both calls within the 3 s request timeout each, plus slack for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn watch_from_a_compacted_revision_is_compacted() {
        let backend = Backend::new().await;
        let store = backend.store();
        let first = store.set_halted(true, &by()).await.unwrap();
        store.set_halted(false, &by()).await.unwrap();
        let last = store.set_halted(true, &by()).await.unwrap();
        let mut client = etcd_client::Client::connect([backend.server.endpoint()], None)
            .await
            .unwrap();
        client
            .compact(i64::try_from(last).unwrap(), None)
            .await
            .unwrap();

        // etcd may refuse at once or as the stream's first item.
        let outcome = match store.watch(first).await {
            Err(e) => e,
            Ok(mut stream) => match tokio::time::timeout(STREAM_DEADLINE, stream.next()).await {
                Ok(Some(Err(e))) => e,
                other => panic!("expected a compaction error, got {other:?}"),
            },
        };
        assert!(
            matches!(outcome, StoreError::Compacted { requested, .. } if requested == first),
            "{outcome:?}"
        );

        // From the compaction point on, the watch works.
        let mut stream = watch(store, last - 1).await;
        assert_eq!(next_event(&mut stream).await.revision, last);
    }

    #[tokio::test]
    async fn corrupt_values_name_their_key() {
        let backend = Backend::new().await;
        let mut client = etcd_client::Client::connect([backend.server.endpoint()], None)
            .await
            .unwrap();
        client
            .put("/boifi-test/policies/bad", "{not json", None)
            .await
            .unwrap();
        let err = backend.store().get("bad").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "/boifi-test/policies/bad"),
            "{err:?}"
        );
        let err = backend.store().snapshot().await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        client
            .delete("/boifi-test/policies/bad", None)
            .await
            .unwrap();
        client.put("/boifi-test/halt", "yes", None).await.unwrap();
        let err = backend.store().snapshot().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "/boifi-test/halt"),
            "{err:?}"
        );
    }
}
