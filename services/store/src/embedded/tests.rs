//! Embedded-only behaviour: crash safety, the directory lock, history bounds and lagging
//! watchers. The behaviour shared with etcd is in the workspace's `tests/tests/store_suite.rs`.

use std::time::Duration;

use boifi_policy::Policy;
use futures::StreamExt;

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

fn by() -> Attribution {
    Attribution::new("test", None, 0).unwrap()
}

fn policy(name: &str, version: &str) -> ValidPolicy {
    let policy: Policy = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "version": version },
        "spec": { "rules": [ { "fault": { "abort": { "httpStatus": 503 } } } ] }
    }))
    .unwrap();
    ValidPolicy::try_from(policy).unwrap()
}

async fn next(stream: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("watch answered in time")
        .expect("watch still open")
}

fn version_of(store: &EmbeddedStore, name: &str) -> Option<String> {
    let state = store.shared.current();
    state
        .policies
        .get(name)
        .and_then(|p| p.policy.metadata.version.clone())
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
async fn a_leftover_temp_file_from_a_crash_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let put = store
        .put(&policy("p", "old"), Precondition::None, &by())
        .await
        .unwrap();
    drop(store);

    // A crash after writing the temp file fully but before the rename: the write was never
    // acknowledged, so the old state is the right one.
    let newer = std::fs::read_to_string(dir.path().join(disk::STATE_FILE))
        .unwrap()
        .replace("\"old\"", "\"new\"");
    assert!(newer.contains("\"new\""));
    std::fs::write(dir.path().join(disk::TEMP_FILE), newer).unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(version_of(&store, "p").as_deref(), Some("old"));
    assert_eq!(store.snapshot().await.unwrap().revision, put.revision);
    assert!(
        !dir.path().join(disk::TEMP_FILE).exists(),
        "temp file removed"
    );
}

#[tokio::test]
async fn a_truncated_temp_file_from_a_crash_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .put(&policy("p", "old"), Precondition::None, &by())
        .await
        .unwrap();
    drop(store);
    let full = std::fs::read(dir.path().join(disk::STATE_FILE)).unwrap();
    std::fs::write(dir.path().join(disk::TEMP_FILE), &full[..full.len() / 2]).unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(version_of(&store, "p").as_deref(), Some("old"));
    // And the store keeps working: the next write replaces the state as usual.
    store
        .put(&policy("p", "next"), Precondition::None, &by())
        .await
        .unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(version_of(&store, "p").as_deref(), Some("next"));
}

#[test]
fn a_damaged_state_file_is_a_corrupt_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(disk::STATE_FILE);
    for (content, expected) in [
        (&b"{\"format\": 1, \"revis"[..], "not a BOIFI state file"),
        (b"\xff\xfe garbage", "not a BOIFI state file"),
        (
            br#"{"format":2,"revision":0,"halted":false,"history_floor":0,"policies":[],"history":[]}"#,
            "format 2 is not supported",
        ),
        (
            br#"{"format":1,"revision":1,"halted":false,"history_floor":0,"policies":[],"history":[{"revision":5,"change":{"halt":{"halted":true}}}]}"#,
            "out of order",
        ),
        (
            br#"{"format":1,"revision":3,"halted":false,"history_floor":0,"policies":[{"revision":7,"policy":{"metadata":{"name":"a"},"spec":{}}}],"history":[]}"#,
            "outside 1..=3",
        ),
    ] {
        std::fs::write(&path, content).unwrap();
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Corrupt { key, reason }) => {
                assert_eq!(key, path.display().to_string());
                assert!(reason.contains(expected), "{reason}");
            }
            Err(e) => panic!("expected Corrupt, got {e:?}"),
            Ok(_) => panic!("damaged file {:?} was accepted", String::from_utf8_lossy(content)),
        }
    }
}

#[test]
fn an_oversized_state_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let file = File::create(dir.path().join(disk::STATE_FILE)).unwrap();
    // Sparse: takes no disk space.
    file.set_len(disk::MAX_STATE_BYTES + 1).unwrap();
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("limit"), "{reason}"),
        other => panic!("expected Corrupt, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn the_state_file_is_replaced_whole_on_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    for i in 0..5 {
        store
            .put(&policy("p", &i.to_string()), Precondition::None, &by())
            .await
            .unwrap();
        // What is on disk after each acknowledged write parses and has that write.
        let state = disk::load(dir.path()).unwrap();
        let stored = state.policies.get("p").unwrap();
        assert_eq!(stored.policy.metadata.version, Some(i.to_string()));
        assert!(!dir.path().join(disk::TEMP_FILE).exists());
    }
}

#[tokio::test]
async fn history_is_bounded_and_older_revisions_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let total = HISTORY_EVENTS + 5;
    for i in 0..total {
        store.set_halted(i % 2 == 0, &by()).await.unwrap();
    }
    let last = store.snapshot().await.unwrap().revision;
    assert_eq!(last, total as Revision);
    let floor = last - HISTORY_EVENTS as Revision;

    match store.watch(floor - 1).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (floor - 1, floor));
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut stream = store.watch(floor).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().revision, floor + 1);

    // The bound and the floor survive a restart.
    drop(stream);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.watch(floor - 1).await.err(),
        Some(StoreError::Compacted { .. })
    ));
    let mut stream = store.watch(last - 1).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().revision, last);
}

#[tokio::test]
async fn a_lagging_watcher_catches_up_from_history_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut stream = store.watch(0).await.unwrap();
    // More events than the live buffer holds, none read yet: the receiver lags.
    let count = BROADCAST_CAPACITY + 20;
    for i in 0..count {
        store.set_halted(i % 2 == 0, &by()).await.unwrap();
    }
    for expected in 1..=count as Revision {
        let event = next(&mut stream).await.unwrap();
        assert_eq!(event.revision, expected);
    }
}

#[tokio::test]
async fn a_watcher_lagging_past_the_history_ends_with_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut stream = store.watch(0).await.unwrap();
    for i in 0..(BROADCAST_CAPACITY + HISTORY_EVENTS) {
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
    assert!(disk::load(dir.path())
        .unwrap()
        .policies
        .contains_key("abandoned"));
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
