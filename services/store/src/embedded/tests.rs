//! Embedded-only behaviour: memory and file agreeing, the directory lock, the history bounds
//! (events and bytes), lagging watchers and the `state.json` import. The behaviour shared with
//! etcd is in the workspace's `tests/tests/store_suite.rs`; the kill -9 crash test runs the
//! policy-api binary (`services/policy-api/tests/binary.rs`).

use std::time::Duration;

use boifi_policy::Policy;
use futures::StreamExt;
use serde_json::json;

use super::import::{IMPORTED_FILE, MAX_STATE_BYTES, STATE_FILE, TEMP_FILE};
use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

fn by() -> Attribution {
    Attribution::new("test", None, 0).unwrap()
}

fn policy_with_body(name: &str, version: &str, body_bytes: usize) -> ValidPolicy {
    let mut abort = json!({ "httpStatus": 503 });
    if body_bytes > 0 {
        abort["body"] = json!("x".repeat(body_bytes));
    }
    let policy: Policy = serde_json::from_value(json!({
        "metadata": { "name": name, "version": version },
        "spec": { "rules": [ { "fault": { "abort": abort } } ] }
    }))
    .unwrap();
    ValidPolicy::try_from(policy).unwrap()
}

fn policy(name: &str, version: &str) -> ValidPolicy {
    policy_with_body(name, version, 0)
}

async fn next(stream: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("watch answered in time")
        .expect("watch still open")
}

fn version_of(store: &EmbeddedStore, name: &str) -> Option<String> {
    store
        .shared
        .memory()
        .policies
        .get(name)
        .and_then(|p| p.policy.metadata.version.clone())
}

/// What a fresh load of the file gives, to compare with what the store serves.
fn on_disk(store: &EmbeddedStore) -> Memory {
    tables::load(&store.shared.db).unwrap()
}

fn open_limited(dir: &Path, events: u64, bytes: u64) -> EmbeddedStore {
    EmbeddedStore::open_with(
        dir,
        HistoryLimits { events, bytes },
        AuditRetention::default(),
    )
    .unwrap()
}

fn expect_compacted(
    result: Result<WatchStream, StoreError>,
    requested: Revision,
    oldest: Revision,
) {
    match result {
        Err(StoreError::Compacted {
            requested: r,
            oldest: o,
        }) => assert_eq!((r, o), (requested, oldest)),
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
}

#[tokio::test]
async fn a_second_open_of_the_same_dir_fails_clearly_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedStore::open(dir.path()).unwrap();
    let err = EmbeddedStore::open(dir.path())
        .err()
        .expect("second open fails");
    let message = err.to_string();
    assert!(
        message.contains("in use by another BOIFI process"),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    drop(first);
    EmbeddedStore::open(dir.path()).expect("open after the first store closed");
}

#[tokio::test]
async fn what_is_on_disk_matches_what_is_served_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(on_disk(&store), Memory::default());
    for i in 0..3 {
        let name = format!("p{i}");
        store
            .put(&policy(&name, "1"), Precondition::None, &by())
            .await
            .unwrap();
        assert_eq!(on_disk(&store), *store.shared.memory());
        store
            .put(&policy(&name, "2"), Precondition::None, &by())
            .await
            .unwrap();
        assert_eq!(on_disk(&store), *store.shared.memory());
    }
    store.delete("p1", Precondition::None, &by()).await.unwrap();
    assert_eq!(on_disk(&store), *store.shared.memory());
    store.set_halted(true, &by()).await.unwrap();
    let disk = on_disk(&store);
    assert_eq!(disk, *store.shared.memory());
    assert_eq!(
        (disk.revision, disk.halted, disk.policies.len()),
        (8, true, 2)
    );
    assert_eq!(version_of(&store, "p2").as_deref(), Some("2"));
}

#[test]
fn a_store_file_that_is_not_a_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(tables::DB_FILE), vec![0xA5; 64 * 1024]).unwrap();
    let err = EmbeddedStore::open(dir.path())
        .err()
        .expect("a garbage file is refused");
    let message = err.to_string();
    assert!(message.contains(tables::DB_FILE), "{message}");
}

#[tokio::test]
async fn a_file_changed_behind_the_stores_back_is_corrupt_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    for i in 0..5 {
        store.set_halted(i % 2 == 0, &by()).await.unwrap();
    }
    drop(store);
    let db_path = dir.path().join(tables::DB_FILE);
    let expect_corrupt = |key: &str, reason: &str| match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Corrupt { key: k, reason: r }) => {
            assert_eq!(k, format!("{}: {key}", tables::DB_FILE));
            assert!(r.contains(reason), "{r}");
        }
        Err(e) => panic!("expected Corrupt, got {e:?}"),
        Ok(_) => panic!("a tampered file was accepted"),
    };

    let db = tables::open(&db_path).unwrap();
    tables::tamper::put_policy_bytes(&db, "p", 2, b"{not json");
    drop(db);
    expect_corrupt("policies/p", "not a policy");

    let db = tables::open(&db_path).unwrap();
    tables::tamper::put_policy_bytes(&db, "p", 9, br#"{"metadata":{"name":"p"},"spec":{}}"#);
    drop(db);
    expect_corrupt("policies/p", "outside 1..=5");

    let db = tables::open(&db_path).unwrap();
    tables::tamper::put_policy_bytes(&db, "p", 2, br#"{"metadata":{"name":"q"},"spec":{}}"#);
    drop(db);
    expect_corrupt("policies/p", "named \"q\"");

    let db = tables::open(&db_path).unwrap();
    tables::tamper::put_policy_bytes(&db, "p", 2, br#"{"metadata":{"name":"p"},"spec":{}}"#);
    tables::tamper::remove_history(&db, 3);
    drop(db);
    expect_corrupt("history", "one per revision expected");
}

#[test]
fn the_default_history_limits_are_the_documented_constants() {
    assert_eq!(
        HistoryLimits::DEFAULT,
        HistoryLimits {
            events: 1000,
            bytes: 16 * 1024 * 1024
        }
    );
}

#[tokio::test]
async fn history_is_bounded_by_count_and_older_revisions_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let events = 50;
    let store = open_limited(dir.path(), events, HISTORY_BYTES);
    let total = events + 5;
    for i in 0..total {
        store.set_halted(i % 2 == 0, &by()).await.unwrap();
    }
    let last = store.snapshot().await.unwrap().revision;
    assert_eq!(last, total);
    let floor = last - events;
    assert_eq!(
        tables::history_usage(&store.shared.db).unwrap().1,
        events,
        "entries kept"
    );

    expect_compacted(store.watch(floor - 1).await, floor - 1, floor);
    let mut stream = store.watch(floor).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().revision, floor + 1);

    // The bound and the floor survive a restart.
    drop(stream);
    drop(store);
    let store = open_limited(dir.path(), events, HISTORY_BYTES);
    expect_compacted(store.watch(floor - 1).await, floor - 1, floor);
    let mut stream = store.watch(last - 1).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().revision, last);
}

#[tokio::test]
async fn history_is_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = 64 * 1024;
    let store = open_limited(dir.path(), 1000, bytes);
    let writes = 100;
    for i in 0..writes {
        store
            .put(
                &policy_with_body(&format!("p{}", i % 7), &i.to_string(), 4_000),
                Precondition::None,
                &by(),
            )
            .await
            .unwrap();
    }
    let (held, count) = tables::history_usage(&store.shared.db).unwrap();
    assert!(held <= bytes, "{held} bytes held, limit {bytes}");
    // Each event is a little over 4 KB: the bound keeps about 15, and trims only what it must.
    assert!((10..=16).contains(&count), "{count} events kept");
    assert!(
        held + 4_200 > bytes,
        "{held} bytes held: trimmed more than needed"
    );
    let floor = writes - count;
    assert_eq!(store.shared.memory().history_floor, floor);
    expect_compacted(store.watch(floor - 1).await, floor - 1, floor);

    // Every kept event comes back, in order, then live ones.
    let mut stream = store.watch(floor).await.unwrap();
    for revision in floor + 1..=writes {
        assert_eq!(next(&mut stream).await.unwrap().revision, revision);
    }
    let live = store.set_halted(true, &by()).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().revision, live);
}

#[tokio::test]
async fn the_newest_event_is_kept_even_when_alone_over_the_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_limited(dir.path(), 1000, 1024);
    store.set_halted(true, &by()).await.unwrap();
    let put = store
        .put(
            &policy_with_body("big", "1", 4_000),
            Precondition::None,
            &by(),
        )
        .await
        .unwrap();
    assert_eq!(tables::history_usage(&store.shared.db).unwrap().1, 1);
    let mut stream = store.watch(put.revision - 1).await.unwrap();
    let event = next(&mut stream).await.unwrap();
    assert_eq!(event.revision, put.revision);
    assert!(matches!(event.change, Change::Put(p) if p.policy.metadata.name == "big"));
    expect_compacted(store.watch(0).await, 0, 1);
}

#[tokio::test]
async fn a_large_policy_updated_many_times_keeps_the_file_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = 1024 * 1024;
    let store = open_limited(dir.path(), 1000, bytes);
    let file = dir.path().join(tables::DB_FILE);
    let size = || std::fs::metadata(&file).unwrap().len();
    let mut sizes = Vec::new();
    // Two rounds of 150 writes of 60 KB each: 18 MB written in all.
    for round in 0..2 {
        for i in 0..150 {
            store
                .put(
                    &policy_with_body("large", &format!("{round}-{i}"), 60_000),
                    Precondition::None,
                    &by(),
                )
                .await
                .unwrap();
        }
        let (held, count) = tables::history_usage(&store.shared.db).unwrap();
        assert!(held <= bytes, "{held} history bytes, limit {bytes}");
        assert!(count < 20, "{count} events of 60 KB kept under 1 MiB");
        sizes.push(size());
    }
    // What is live: 1 MiB of history and one 60 KB policy. redb writes copy-on-write and
    // reuses freed pages, so the file stays a small multiple of that (1.6 MB when measured),
    // and the second round of writes does not grow it further.
    assert!(sizes[0] <= 3 * bytes, "file is {} bytes", sizes[0]);
    assert!(
        sizes[1] <= sizes[0] + bytes / 2,
        "file grew from {} to {} bytes with the same live data",
        sizes[0],
        sizes[1]
    );
}

#[tokio::test]
async fn a_lagging_watcher_catches_up_from_history_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut stream = store.watch(0).await.unwrap();
    // More events than the live buffer holds, none read yet: the receiver lags, and catches
    // up from the file in several batches.
    let count = BROADCAST_CAPACITY + HISTORY_BATCH + 20;
    for i in 0..count {
        store.set_halted(i % 2 == 0, &by()).await.unwrap();
    }
    for expected in 1..=count as Revision {
        let event = next(&mut stream).await.unwrap();
        assert_eq!(event.revision, expected);
        assert_eq!(
            event.change,
            Change::Halt {
                halted: expected % 2 == 1
            }
        );
    }
}

#[tokio::test]
async fn a_watcher_lagging_past_the_history_ends_with_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let events = 50;
    let store = open_limited(dir.path(), events, HISTORY_BYTES);
    let mut stream = store.watch(0).await.unwrap();
    for i in 0..(BROADCAST_CAPACITY as u64 + events) {
        store.set_halted(i % 2 == 0, &by()).await.unwrap();
    }
    let err = next(&mut stream).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested: 0, .. }),
        "{err:?}"
    );
    let end = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap();
    assert!(end.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn a_write_abandoned_by_its_caller_still_completes_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut stream = store.watch(0).await.unwrap();
    let p = policy("abandoned", "1");
    // Poll once so the write starts, then drop the future.
    {
        let by = by();
        let put = store.put(&p, Precondition::None, &by);
        let _ = tokio::time::timeout(Duration::ZERO, put).await;
    }
    let event = next(&mut stream).await.unwrap();
    assert_eq!(event.revision, 1);
    assert!(store.get("abandoned").await.unwrap().is_some());
    assert!(on_disk(&store).policies.contains_key("abandoned"));
}

#[test]
fn preconditions_follow_etcd_rules() {
    assert!(holds(Precondition::None, None));
    assert!(holds(Precondition::None, Some(3)));
    assert!(holds(Precondition::Absent, None));
    assert!(!holds(Precondition::Absent, Some(3)));
    assert!(holds(Precondition::Revision(3), Some(3)));
    assert!(!holds(Precondition::Revision(2), Some(3)));
    assert!(!holds(Precondition::Revision(3), None));
    // etcd compares an absent key's mod_revision as 0.
    assert!(holds(Precondition::Revision(0), None));
}

mod import {
    use super::*;

    /// A `state.json` as the file-based store wrote it: two policies, halted, revision 9,
    /// history 4..=9.
    fn legacy_state() -> serde_json::Value {
        let stored = |name: &str, version: &str, revision: u64| {
            let mut p = serde_json::to_value(policy(name, version).policy()).unwrap();
            p["status"] = json!({ "revision": revision });
            p
        };
        json!({
            "format": 1,
            "revision": 9,
            "halted": true,
            "history_floor": 3,
            "policies": [
                { "revision": 5, "policy": stored("alpha", "2", 5) },
                { "revision": 8, "policy": stored("beta", "1", 8) },
            ],
            "history": [
                { "revision": 4, "change": { "put": { "policy": stored("alpha", "1", 4) } } },
                { "revision": 5, "change": { "put": { "policy": stored("alpha", "2", 5) } } },
                { "revision": 6, "change": { "put": { "policy": stored("gamma", "1", 6) } } },
                { "revision": 7, "change": { "delete": { "name": "gamma" } } },
                { "revision": 8, "change": { "put": { "policy": stored("beta", "1", 8) } } },
                { "revision": 9, "change": { "halt": { "halted": true } } },
            ]
        })
    }

    fn write_legacy(dir: &Path, state: &serde_json::Value) -> Vec<u8> {
        let bytes = serde_json::to_vec(state).unwrap();
        std::fs::write(dir.join(STATE_FILE), &bytes).unwrap();
        bytes
    }

    fn expected_policies() -> Vec<StoredPolicy> {
        vec![
            tables::stamp(policy("alpha", "2").into_policy(), 5),
            tables::stamp(policy("beta", "1").into_policy(), 8),
        ]
    }

    #[tokio::test]
    async fn a_state_json_is_imported_once_then_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = write_legacy(dir.path(), &legacy_state());
        let store = EmbeddedStore::open(dir.path()).unwrap();

        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(
            (snapshot.revision, snapshot.halted),
            (9, true),
            "revision and halt flag imported"
        );
        assert_eq!(snapshot.policies, expected_policies());
        assert!(!dir.path().join(STATE_FILE).exists(), "state.json renamed");
        assert_eq!(
            std::fs::read(dir.path().join(IMPORTED_FILE)).unwrap(),
            bytes,
            "the old file is kept as it was"
        );

        // The history starts at the imported revision.
        expect_compacted(store.watch(8).await, 8, 9);
        let mut stream = store.watch(9).await.unwrap();
        let deleted = store
            .delete("alpha", Precondition::Revision(5), &by())
            .await;
        assert_eq!(deleted.unwrap(), Some(10), "revisions continue");
        assert_eq!(next(&mut stream).await.unwrap().revision, 10);

        // A reopen reads the database; nothing is imported again.
        drop(stream);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, 10);
        assert_eq!(snapshot.policies, expected_policies()[1..]);
    }

    #[tokio::test]
    async fn an_import_cut_short_before_the_rename_is_finished_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path(), &legacy_state());
        drop(EmbeddedStore::open(dir.path()).unwrap());
        // As if the process died after the import's commit, before the rename.
        std::fs::rename(dir.path().join(IMPORTED_FILE), dir.path().join(STATE_FILE)).unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(STATE_FILE).exists());
        assert!(dir.path().join(IMPORTED_FILE).exists());
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, 9);
        assert_eq!(snapshot.policies, expected_policies());
    }

    #[tokio::test]
    async fn a_state_json_next_to_a_store_it_was_not_imported_into_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .put(&policy("kept", "1"), Precondition::None, &by())
            .await
            .unwrap();
        drop(store);
        write_legacy(dir.path(), &legacy_state());

        let message = EmbeddedStore::open(dir.path())
            .err()
            .expect("refused")
            .to_string();
        for part in ["store.redb", "state.json", "not imported"] {
            assert!(message.contains(part), "{message}");
        }
        assert!(dir.path().join(STATE_FILE).exists(), "left in place");

        // Moving the file away, as the message says, opens the store as it was.
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(version_of(&store, "kept").as_deref(), Some("1"));
        assert_eq!(store.snapshot().await.unwrap().revision, 1);
    }

    #[test]
    fn a_damaged_state_json_is_a_corrupt_error_naming_the_file_and_is_not_imported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for (content, expected) in [
            (&b"{\"format\": 1, \"revis"[..], "not a BOIFI state file"),
            (b"\xff\xfe garbage", "not a BOIFI state file"),
            (
                br#"{"format":2,"revision":0,"halted":false,"history_floor":0,"policies":[],"history":[]}"#,
                "format 2 is not supported",
            ),
            (
                br#"{"format":1,"revision":1,"halted":false,"history_floor":4,"policies":[],"history":[]}"#,
                "above revision",
            ),
            (
                br#"{"format":1,"revision":3,"halted":false,"history_floor":0,"policies":[{"revision":7,"policy":{"metadata":{"name":"a"},"spec":{}}}],"history":[]}"#,
                "outside 1..=3",
            ),
            (
                br#"{"format":1,"revision":3,"halted":false,"history_floor":0,"policies":[{"revision":1,"policy":{"metadata":{"name":"a"},"spec":{}}},{"revision":2,"policy":{"metadata":{"name":"a"},"spec":{}}}],"history":[]}"#,
                "appears twice",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            match EmbeddedStore::open(dir.path()) {
                Err(StoreError::Corrupt { key, reason }) => {
                    assert_eq!(key, path.display().to_string());
                    assert!(reason.contains(expected), "{reason}");
                }
                Err(e) => panic!("expected Corrupt, got {e:?}"),
                Ok(_) => panic!(
                    "damaged file {:?} was accepted",
                    String::from_utf8_lossy(content)
                ),
            }
            assert!(path.exists(), "the damaged file stays for the user to fix");
        }
        // Once fixed, it is imported: the failed attempts left the database uninitialized.
        write_legacy(dir.path(), &legacy_state());
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.shared.memory().revision, 9);
    }

    #[test]
    fn an_oversized_state_json_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join(STATE_FILE)).unwrap();
        // Sparse: takes no disk space.
        file.set_len(MAX_STATE_BYTES + 1).unwrap();
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Corrupt { reason, .. }) => {
                assert!(reason.contains("limit"), "{reason}")
            }
            other => panic!("expected Corrupt, got {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn a_leftover_temp_file_of_the_old_store_is_removed_unread() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path(), &legacy_state());
        // A crash of the old store after writing its temp file, before the rename: that write
        // was never acknowledged, so `state.json` is the state to import.
        let mut newer = legacy_state();
        newer["revision"] = json!(10);
        newer["halted"] = json!(false);
        std::fs::write(
            dir.path().join(TEMP_FILE),
            serde_json::to_vec(&newer).unwrap(),
        )
        .unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!((snapshot.revision, snapshot.halted), (9, true));
        assert!(!dir.path().join(TEMP_FILE).exists(), "temp file removed");
    }
}

#[tokio::test]
async fn the_audit_trail_is_trimmed_on_disk_by_count_and_then_by_age() {
    const HOUR_MS: u64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let retention = AuditRetention {
        max_entries: 5,
        max_age: Duration::from_millis(HOUR_MS),
    };
    let store = EmbeddedStore::open_with_retention(dir.path(), retention).unwrap();
    assert_eq!(trail::stored(&store.shared.db).unwrap(), 0);
    let at = |ms| Attribution::new("test", None, ms).unwrap();
    for i in 0..9u64 {
        store.set_halted(i % 2 == 0, &at(1_000)).await.unwrap();
        assert_eq!(trail::stored(&store.shared.db).unwrap(), (i + 1).min(5));
    }
    // Two hours later, the write's own transaction removes the five that aged out.
    store
        .set_halted(true, &at(1_000 + 2 * HOUR_MS))
        .await
        .unwrap();
    assert_eq!(trail::stored(&store.shared.db).unwrap(), 1);
    let page = store
        .audit(&AuditQuery::newest(10, 1_000 + 2 * HOUR_MS))
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].revision, 10);
}
