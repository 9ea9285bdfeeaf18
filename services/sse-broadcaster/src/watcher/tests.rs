use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use boifi_policy::{Policy, ValidPolicy};
use boifi_store::{
    Attribution, AuditPage, AuditQuery, Change, ManualClock, Precondition, PutOutcome,
    StoredPolicy, SystemClock,
};
use prometheus::Registry;
use tokio::sync::mpsc;

use super::*;
use crate::hub::{StreamItem, StreamStart};
use crate::metrics::Metrics;
use crate::test_support::{policy, stored};
use boifi_policy::wire::Filter;

type Live = mpsc::UnboundedSender<Result<WatchEvent, StoreError>>;

/// An in-memory store whose watches can be broken and whose history can be compacted.
#[derive(Default)]
struct FakeStore {
    inner: Mutex<Fake>,
}

#[derive(Default)]
struct Fake {
    revision: u64,
    halted: bool,
    policies: BTreeMap<String, StoredPolicy>,
    log: Vec<WatchEvent>,
    /// Watches from below this revision fail with `Compacted`.
    compacted: u64,
    live: Vec<Live>,
    watch_calls: Vec<u64>,
    failing_watch_opens: usize,
    failing_snapshots: usize,
}

impl FakeStore {
    fn record(&self, change: Change) -> u64 {
        let mut fake = self.inner.lock().unwrap();
        fake.revision += 1;
        let revision = fake.revision;
        match &change {
            Change::Put(stored) => {
                let mut stored = stored.clone();
                stored.revision = revision;
                fake.policies
                    .insert(stored.policy.metadata.name.clone(), stored);
            }
            Change::Delete { name } => {
                fake.policies.remove(name);
            }
            Change::Halt { halted } => fake.halted = *halted,
        }
        let change = match change {
            Change::Put(mut stored) => {
                stored.revision = revision;
                Change::Put(stored)
            }
            other => other,
        };
        let event = WatchEvent { revision, change };
        fake.log.push(event.clone());
        fake.live.retain(|tx| tx.send(Ok(event.clone())).is_ok());
        revision
    }

    fn put_policy(&self, policy: Policy) -> u64 {
        self.record(Change::Put(StoredPolicy {
            policy,
            revision: 0,
        }))
    }

    fn lose_watches(&self) {
        for tx in self.inner.lock().unwrap().live.drain(..) {
            let _ = tx.send(Err(StoreError::Unavailable("connection reset".into())));
        }
    }

    fn compact(&self) {
        let mut fake = self.inner.lock().unwrap();
        fake.compacted = fake.revision;
    }

    fn watch_calls(&self) -> Vec<u64> {
        self.inner.lock().unwrap().watch_calls.clone()
    }
}

#[async_trait]
impl PolicyStore for FakeStore {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<StoredPolicy>, StoreError> {
        Ok(self.inner.lock().unwrap().policies.get(name).cloned())
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut fake = self.inner.lock().unwrap();
        if fake.failing_snapshots > 0 {
            fake.failing_snapshots -= 1;
            return Err(StoreError::Unavailable("down".into()));
        }
        Ok(Snapshot {
            revision: fake.revision,
            halted: fake.halted,
            policies: fake.policies.values().cloned().collect(),
        })
    }

    async fn put(
        &self,
        policy: &ValidPolicy,
        _: Precondition,
        _: &Attribution,
    ) -> Result<PutOutcome, StoreError> {
        let created = !self
            .inner
            .lock()
            .unwrap()
            .policies
            .contains_key(policy.name());
        let revision = self.put_policy(policy.policy().clone());
        Ok(PutOutcome { revision, created })
    }

    async fn delete(
        &self,
        name: &str,
        _: Precondition,
        _: &Attribution,
    ) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.record(Change::Delete { name: name.into() })))
    }

    async fn set_halted(&self, halted: bool, _: &Attribution) -> Result<u64, StoreError> {
        Ok(self.record(Change::Halt { halted }))
    }

    async fn audit(&self, _: &AuditQuery) -> Result<AuditPage, StoreError> {
        Ok(AuditPage::default())
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let mut fake = self.inner.lock().unwrap();
        fake.watch_calls.push(after);
        if after < fake.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: fake.compacted,
            });
        }
        if fake.failing_watch_opens > 0 {
            fake.failing_watch_opens -= 1;
            return Err(StoreError::Unavailable("refused".into()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for event in fake.log.iter().filter(|e| e.revision > after) {
            let _ = tx.send(Ok(event.clone()));
        }
        fake.live.push(tx);
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })))
    }
}

struct Running {
    store: Arc<FakeStore>,
    hub: Arc<Hub>,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: Arc<FakeStore>, clock: Arc<dyn Clock>) -> Running {
    let hub = Arc::new(Hub::new(
        Settings::default(),
        Metrics::new(Registry::new()).unwrap(),
    ));
    let task = tokio::spawn(watch_store(store.clone(), clock, hub.clone()));
    Running { store, hub, task }
}

async fn loaded(hub: &Hub) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while hub.revision().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("first snapshot within the deadline");
}

fn subscribe(hub: &Arc<Hub>) -> StreamStart {
    hub.open_stream(&Arc::new(Filter::default()), None).unwrap()
}

/// The next entry as `(revision, event kind, policy name or halt flag)`.
async fn next(ring: &mut StreamStart) -> (u64, String) {
    let item = tokio::time::timeout(Duration::from_secs(60), ring.items.recv())
        .await
        .expect("an entry within the deadline")
        .expect("queue open");
    let StreamItem::Entry(entry) = item else {
        return Box::pin(next(ring)).await;
    };
    let (kind, frame) = entry.frame_for(&Filter::default()).expect("visible to all");
    let text = String::from_utf8(frame.to_vec()).unwrap();
    let data = text.lines().nth(2).unwrap().trim_start_matches("data: ");
    let json: serde_json::Value = serde_json::from_str(data).unwrap();
    let what = json["metadata"]["name"]
        .as_str()
        .or(json["name"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| json["halted"].to_string());
    (entry.revision, format!("{} {what}", kind.name()))
}

#[tokio::test]
async fn loads_a_snapshot_then_follows_changes_in_order() {
    let store = Arc::new(FakeStore::default());
    store.put_policy(policy("a", "reviews", &[None]));
    let running = start(store.clone(), Arc::new(SystemClock));
    loaded(&running.hub).await;
    assert_eq!(running.hub.revision(), Some(1));
    let mut ring = subscribe(&running.hub);
    store.put_policy(policy("b", "ratings", &[None]));
    store.record(Change::Delete { name: "a".into() });
    store.record(Change::Halt { halted: true });
    assert_eq!(next(&mut ring).await, (2, "policy b".into()));
    assert_eq!(next(&mut ring).await, (3, "delete a".into()));
    assert_eq!(next(&mut ring).await, (4, "halt true".into()));
    assert_eq!(store.watch_calls(), [1]);
    running.hub.shut_down();
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("watcher ends on shutdown")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lost_watch_is_resumed_from_the_last_revision_after_backoff() {
    let running = start(Arc::new(FakeStore::default()), Arc::new(SystemClock));
    let store = &running.store;
    loaded(&running.hub).await;
    let mut ring = subscribe(&running.hub);
    store.put_policy(policy("a", "reviews", &[None]));
    assert_eq!(next(&mut ring).await, (1, "policy a".into()));

    let lost_at = Instant::now();
    store.lose_watches();
    store.inner.lock().unwrap().failing_watch_opens = 2;
    // Changes while the watcher is away arrive after it reconnects, once each, in order.
    store.put_policy(policy("b", "reviews", &[None]));
    store.put_policy(policy("a", "ratings", &[None]));
    assert_eq!(next(&mut ring).await, (2, "policy b".into()));
    assert_eq!(next(&mut ring).await, (3, "policy a".into()));
    store.put_policy(policy("c", "reviews", &[None]));
    assert_eq!(next(&mut ring).await, (4, "policy c".into()));
    assert_eq!(store.watch_calls(), [0, 1, 1, 1]);
    assert_eq!(running.hub.metrics.watch_restarts.get(), 1);
    // Three backoff waits: at least 50 + 100 + 200 ms (the lower halves of the windows).
    assert!(
        lost_at.elapsed() >= Duration::from_millis(350),
        "{:?}",
        lost_at.elapsed()
    );
    assert!(ring.items.try_recv().is_err(), "no duplicates");
}

#[tokio::test(start_paused = true)]
async fn compaction_reloads_a_snapshot_and_sends_the_difference() {
    let store = Arc::new(FakeStore::default());
    store.put_policy(policy("a", "reviews", &[None]));
    store.put_policy(policy("b", "reviews", &[None]));
    let running = start(store.clone(), Arc::new(SystemClock));
    loaded(&running.hub).await;
    let mut ring = subscribe(&running.hub);

    store.lose_watches();
    store.put_policy(policy("c", "reviews", &[None]));
    store.record(Change::Delete { name: "a".into() });
    store.compact();
    let mut got = vec![next(&mut ring).await, next(&mut ring).await];
    got.sort();
    assert_eq!(got, [(4, "delete a".into()), (4, "policy c".into())]);
    assert_eq!(running.hub.metrics.snapshot_reloads.get(), 1);
    assert_eq!(running.hub.revision(), Some(4));
    // Then it watches from the snapshot's revision.
    store.put_policy(policy("d", "reviews", &[None]));
    assert_eq!(next(&mut ring).await, (5, "policy d".into()));
    assert_eq!(store.watch_calls(), [2, 2, 4]);
}

#[tokio::test]
async fn expiries_are_applied_when_the_clock_reaches_them() {
    let clock = Arc::new(ManualClock::new(1_000));
    let store = Arc::new(FakeStore::default());
    store.put_policy(policy("p", "reviews", &[Some(2_000), Some(3_000)]));
    let running = start(store.clone(), clock.clone());
    loaded(&running.hub).await;
    let mut ring = subscribe(&running.hub);

    // Not due yet: the next entry is the store change, not an expiry.
    clock.set(1_999);
    store.put_policy(policy("q", "reviews", &[None]));
    assert_eq!(next(&mut ring).await, (2, "policy q".into()));

    clock.set(2_000);
    let Some(StreamItem::Entry(entry)) = ring.items.recv().await else {
        panic!("entry")
    };
    assert_eq!((entry.revision, entry.secondary), (2, true));
    let (_, frame) = entry.frame_for(&Filter::default()).unwrap();
    let text = String::from_utf8(frame.to_vec()).unwrap();
    let policy: Policy =
        serde_json::from_str(text.lines().nth(2).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(policy.spec.rules.len(), 1);
    assert_eq!(policy.status.unwrap().rules[0].expires_at_ms, Some(3_000));

    clock.set(5_000);
    assert_eq!(next(&mut ring).await, (2, "delete p".into()));
    let everyone = Arc::new(Filter::default());
    let snapshot = running.hub.poll_check(&everyone, None).unwrap();
    let crate::hub::PollCheck::Respond(view) = snapshot else {
        panic!("snapshot")
    };
    let text = String::from_utf8(view.snapshot_frame(&everyone).to_vec()).unwrap();
    assert!(
        text.contains("\"name\":\"q\"") && !text.contains("\"name\":\"p\""),
        "{text}"
    );
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let settings = Settings {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(800),
        ..Settings::default()
    };
    let mut backoff = Backoff::new(&settings);
    for window_ms in [100, 200, 400, 800, 800, 800] {
        let delay = backoff.next_delay();
        let window = Duration::from_millis(window_ms);
        assert!(
            delay >= window / 2 && delay <= window,
            "{delay:?} in {window:?}"
        );
    }
    backoff.reset();
    assert!(backoff.next_delay() <= Duration::from_millis(100));
}

#[tokio::test]
async fn a_failing_first_snapshot_is_retried() {
    let store = Arc::new(FakeStore::default());
    store.record(Change::Put(stored("a", "reviews", 0)));
    store.inner.lock().unwrap().failing_snapshots = 2;
    let hub = Arc::new(Hub::new(
        Settings {
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            ..Settings::default()
        },
        Metrics::new(Registry::new()).unwrap(),
    ));
    let task = tokio::spawn(watch_store(
        store.clone(),
        Arc::new(SystemClock),
        hub.clone(),
    ));
    loaded(&hub).await;
    assert_eq!(hub.revision(), Some(1));
    assert_eq!(store.inner.lock().unwrap().failing_snapshots, 0);
    hub.shut_down();
    task.await.unwrap();
}
