//! Embedded, file-backed store for single-machine use.
//!
//! - State lives in memory behind an `Arc` that each write replaces; readers clone the `Arc`
//!   and never wait for a disk write.
//! - Writes are serialized by one mutex and run on the blocking pool: compute the new state,
//!   write it durably ([`disk::save`]), then publish it and its event. A write whose caller
//!   went away still completes, so memory and disk never disagree.
//! - The last [`HISTORY_EVENTS`] events are kept (and persisted) for `watch(after)`; older
//!   revisions answer [`StoreError::Compacted`].
//! - A lock file (`flock`) keeps a second process off the same directory.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use async_trait::async_trait;
use boifi_policy::ValidPolicy;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::{
    Attribution, AuditPage, AuditQuery, Change, PolicyStore, Precondition, PutOutcome, Revision,
    Snapshot, StoreError, StoredPolicy, WatchEvent, WatchStream,
};

mod disk;

/// Events kept for watchers that resume from an older revision.
pub const HISTORY_EVENTS: usize = 1000;

/// Live-event buffer per watcher. A watcher that falls further behind catches up from the
/// history instead, so this must stay well below [`HISTORY_EVENTS`].
const BROADCAST_CAPACITY: usize = 256;

pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// The published state. Held only to clone or swap the `Arc`, never across I/O.
    state: RwLock<Arc<State>>,
    /// One writer at a time; holds the highest revision ever handed to a write.
    writer: Mutex<Revision>,
    /// Sent while `state` is write-locked, so a watcher that subscribes under the read lock
    /// gets exactly the events newer than the state it read.
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// Holds the exclusive `flock` on the lock file until the store is dropped.
    _lock: fd_lock::RwLock<File>,
}

#[derive(Debug, Clone, Default)]
struct State {
    revision: Revision,
    halted: bool,
    policies: BTreeMap<String, StoredPolicy>,
    history: VecDeque<Arc<WatchEvent>>,
    /// Every event with a revision above this one is in `history`.
    history_floor: Revision,
}

impl State {
    fn apply(&mut self, revision: Revision, change: &Change) {
        match change {
            Change::Put(stored) => {
                self.policies
                    .insert(stored.policy.metadata.name.clone(), stored.clone());
            }
            Change::Delete { name } => {
                self.policies.remove(name);
            }
            Change::Halt { halted } => self.halted = *halted,
        }
        self.revision = revision;
        self.history.push_back(Arc::new(WatchEvent {
            revision,
            change: change.clone(),
        }));
        self.trim_history(HISTORY_EVENTS);
    }

    /// Keeps the newest `keep` events.
    fn trim_history(&mut self, keep: usize) {
        while self.history.len() > keep {
            if let Some(oldest) = self.history.pop_front() {
                self.history_floor = oldest.revision;
            }
        }
    }
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock_path = dir.join(disk::LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        let mut lock = fd_lock::RwLock::new(lock_file);
        match lock.try_write() {
            // The lock lasts as long as the file stays open (until `Shared` drops), not as
            // long as the guard, which only borrows it.
            Ok(guard) => std::mem::forget(guard),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "data directory {} is in use by another BOIFI process (lock file {})",
                        dir.display(),
                        lock_path.display()
                    ),
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let state = disk::load(&dir)?;
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                dir,
                writer: Mutex::new(state.revision),
                state: RwLock::new(Arc::new(state)),
                events,
                _lock: lock,
            }),
        })
    }

    /// Where the store keeps its files.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Runs a write on the blocking pool. `plan` sees the current state and the revision the
    /// write would get, and returns the change to make (or `None` for no write).
    async fn write<T, F>(&self, plan: F) -> Result<Option<(Revision, T)>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&State, Revision) -> Result<Option<(Change, T)>, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.commit(plan))
            .await
            .map_err(|e| StoreError::Io(io::Error::other(format!("store write task: {e}"))))?
    }
}

impl Shared {
    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn commit<T>(
        &self,
        plan: impl FnOnce(&State, Revision) -> Result<Option<(Change, T)>, StoreError>,
    ) -> Result<Option<(Revision, T)>, StoreError> {
        let mut highest = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current();
        // Above any revision a failed write may have left on disk, so revisions never repeat.
        let revision = (*highest).max(current.revision) + 1;
        let Some((change, result)) = plan(&current, revision)? else {
            return Ok(None);
        };
        let mut next = State::clone(&current);
        next.apply(revision, &change);
        let bytes = disk::encode(&mut next)?;
        *highest = revision;
        disk::save(&self.dir, &bytes)?;
        let event = Arc::new(WatchEvent { revision, change });
        let mut published = self.state.write().unwrap_or_else(PoisonError::into_inner);
        *published = Arc::new(next);
        // Err only means nobody is watching.
        let _ = self.events.send(event);
        drop(published);
        Ok(Some((revision, result)))
    }
}

/// Whether `precondition` holds for a name whose current revision is `current`; the same
/// rule etcd applies (an absent key has revision 0).
fn holds(precondition: Precondition, current: Option<Revision>) -> bool {
    match precondition {
        Precondition::None => true,
        Precondition::Absent => current.is_none(),
        Precondition::Revision(r) => current.unwrap_or(0) == r,
    }
}

#[async_trait]
impl PolicyStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<StoredPolicy>, StoreError> {
        Ok(self.shared.current().policies.get(name).cloned())
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let state = self.shared.current();
        Ok(Snapshot {
            revision: state.revision,
            halted: state.halted,
            policies: state.policies.values().cloned().collect(),
        })
    }

    async fn put(
        &self,
        policy: &ValidPolicy,
        precondition: Precondition,
        _by: &Attribution,
    ) -> Result<PutOutcome, StoreError> {
        let policy = policy.policy().clone();
        let written = self
            .write(move |state, revision| {
                let current = state
                    .policies
                    .get(&policy.metadata.name)
                    .map(|p| p.revision);
                if !holds(precondition, current) {
                    return Err(StoreError::Conflict { current });
                }
                let change = Change::Put(disk::stamp(policy, revision));
                Ok(Some((change, current.is_none())))
            })
            .await?;
        let (revision, created) = written
            .ok_or_else(|| StoreError::Io(io::Error::other("put planned no write (store bug)")))?;
        Ok(PutOutcome { revision, created })
    }

    async fn delete(
        &self,
        name: &str,
        precondition: Precondition,
        _by: &Attribution,
    ) -> Result<Option<Revision>, StoreError> {
        let name = name.to_owned();
        let written = self
            .write(move |state, _| {
                let current = state.policies.get(&name).map(|p| p.revision);
                if !holds(precondition, current) {
                    return Err(StoreError::Conflict { current });
                }
                Ok(current.map(|_| (Change::Delete { name }, ())))
            })
            .await?;
        Ok(written.map(|(revision, ())| revision))
    }

    async fn set_halted(&self, halted: bool, _by: &Attribution) -> Result<Revision, StoreError> {
        let written = self
            .write(move |_, _| Ok(Some((Change::Halt { halted }, ()))))
            .await?;
        written
            .map(|(revision, ())| revision)
            .ok_or_else(|| StoreError::Io(io::Error::other("halt planned no write (store bug)")))
    }

    // Interim: the audit trail of the embedded store comes with its redb rewrite.
    async fn audit(&self, _query: &AuditQuery) -> Result<AuditPage, StoreError> {
        Err(StoreError::Unavailable(
            "the embedded store keeps no audit trail yet".into(),
        ))
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let (events, state) = {
            let published = self
                .shared
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (self.shared.events.subscribe(), Arc::clone(&published))
        };
        let mut watch = Watch {
            shared: Arc::downgrade(&self.shared),
            events,
            pending: VecDeque::new(),
            last: after,
            finished: false,
        };
        watch.catch_up(&state)?;
        Ok(futures::stream::unfold(watch, Watch::next).boxed())
    }
}

struct Watch {
    /// Weak, so an open watch does not keep the store (and its directory lock) alive.
    shared: Weak<Shared>,
    events: broadcast::Receiver<Arc<WatchEvent>>,
    /// Events from the history still to yield.
    pending: VecDeque<Arc<WatchEvent>>,
    /// Revision of the last event yielded (or the `after` asked for).
    last: Revision,
    finished: bool,
}

impl Watch {
    /// Queues the history events after `last`, or fails if some of them were trimmed.
    fn catch_up(&mut self, state: &State) -> Result<(), StoreError> {
        if self.last < state.history_floor {
            return Err(StoreError::Compacted {
                requested: self.last,
                oldest: state.history_floor,
            });
        }
        let last = self.last;
        self.pending = state
            .history
            .iter()
            .filter(|e| e.revision > last)
            .cloned()
            .collect();
        Ok(())
    }

    /// The next event: history first, then live events; an error is yielded once and ends
    /// the stream.
    async fn next(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        while !self.finished {
            match self.next_event().await {
                // Live events can repeat what the history already gave.
                Ok(event) if event.revision <= self.last => {}
                Ok(event) => {
                    self.last = event.revision;
                    return Some((Ok(WatchEvent::clone(&event)), self));
                }
                Err(e) => {
                    self.finished = true;
                    return Some((Err(e), self));
                }
            }
        }
        None
    }

    async fn next_event(&mut self) -> Result<Arc<WatchEvent>, StoreError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match self.events.recv().await {
                Ok(event) => return Ok(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // The missed events are in the history unless it moved past them.
                    log::debug!("embedded watch lagged by {missed} events; replaying history");
                    let shared = self.shared.upgrade().ok_or_else(closed)?;
                    let state = shared.current();
                    self.catch_up(&state)?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(closed()),
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("embedded store closed".into())
}

#[cfg(test)]
mod tests;
