//! Embedded store for single-machine use, on redb (one file, `store.redb`, in the data dir).
//!
//! - [`tables`]: the redb tables (policies, history, meta), loading and writing them.
//! - [`trail`]: the audit trail's table, written in each change's own transaction.
//! - [`import`]: initializing a new database, and the one-time import of the old `state.json`.
//!
//! How it works:
//! - redb holds the truth. A write is one redb transaction that changes one policy (or the halt
//!   flag), appends one history event and one audit entry and trims the oldest of each,
//!   committed durably (fsync)
//!   before the write returns: every acknowledged write survives a crash, and a crash never
//!   leaves half a write. Its cost depends on the change, not on how many policies are stored.
//! - Reads are served from memory: the policies by name (each behind an `Arc`), the revision,
//!   the halt flag. A write updates that map in place (O(log n)) after its commit; a snapshot
//!   copies it under the same lock, so revision, halt flag and policies are of one revision.
//! - Writes are serialized by one mutex and run on the blocking pool. A write whose caller went
//!   away still completes, so memory and disk never disagree.
//! - The history keeps the newest [`HISTORY_EVENTS`] events and at most [`HISTORY_BYTES`] of
//!   them, so `watch(after)` resumes from recent revisions; older ones answer
//!   [`StoreError::Compacted`]. Watchers read it back from redb a batch at a time, then
//!   follow live events.
//! - A lock file (`flock`) keeps a second process off the same directory, with an error that
//!   says so; redb locks its file too.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, Weak};

use async_trait::async_trait;
use boifi_policy::ValidPolicy;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::{
    Attribution, AuditAction, AuditPage, AuditQuery, AuditRetention, Change, PolicyStore,
    Precondition, PutOutcome, Revision, Snapshot, StoreError, StoredPolicy, WatchEvent,
    WatchStream,
};

mod import;
mod tables;
mod trail;

/// Most events kept for watchers that resume from an older revision.
pub const HISTORY_EVENTS: usize = 1000;

/// Most bytes of history kept (16 MiB), counted as the events' encoded size. At 1,000 events of
/// a typical policy (under 2 KB) the count binds first; with large policies (the limit is
/// 1 MiB each) this bound does, so the file and a lagging watcher's catch-up stay bounded.
/// The newest event is always kept.
pub const HISTORY_BYTES: u64 = 16 * 1024 * 1024;

/// Live-event buffer per watcher. A watcher that falls further behind catches up from the
/// history instead, so this must stay well below [`HISTORY_EVENTS`].
const BROADCAST_CAPACITY: usize = 256;

/// History events a catching-up watcher reads from the file at a time.
const HISTORY_BATCH: usize = 64;

const LOCK_FILE: &str = "lock";

/// How much history is kept; [`HistoryLimits::DEFAULT`] outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HistoryLimits {
    events: u64,
    bytes: u64,
}

impl HistoryLimits {
    const DEFAULT: HistoryLimits = HistoryLimits {
        events: HISTORY_EVENTS as u64,
        bytes: HISTORY_BYTES,
    };
}

pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

// Fields drop in order: the database closes before the directory lock is released.
struct Shared {
    dir: PathBuf,
    db: redb::Database,
    limits: HistoryLimits,
    retention: AuditRetention,
    /// What reads see. Written only by a write that has committed, and held only for
    /// in-memory work, never across I/O.
    memory: RwLock<Memory>,
    /// One writer at a time.
    writer: Mutex<()>,
    /// Sent while `memory` is write-locked, so a watcher that subscribes under the read lock
    /// gets exactly the events newer than the revision it read.
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// Holds the exclusive `flock` on the lock file until the store is dropped.
    _lock: fd_lock::RwLock<File>,
}

/// The committed state, as reads see it.
#[derive(Debug, Default, PartialEq)]
struct Memory {
    revision: Revision,
    halted: bool,
    /// Every event with a revision above this one is in the history.
    history_floor: Revision,
    policies: BTreeMap<String, Arc<StoredPolicy>>,
}

impl Memory {
    fn apply(&mut self, revision: Revision, change: &Change, history_floor: Revision) {
        match change {
            Change::Put(stored) => {
                self.policies.insert(
                    stored.policy.metadata.name.clone(),
                    Arc::new(stored.clone()),
                );
            }
            Change::Delete { name } => {
                self.policies.remove(name);
            }
            Change::Halt { halted } => self.halted = *halted,
        }
        self.revision = revision;
        self.history_floor = history_floor;
    }

    fn revision_of(&self, name: &str) -> Option<Revision> {
        self.policies.get(name).map(|p| p.revision)
    }
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`, importing an old `state.json` found there (see
    /// `embedded/import.rs`). Fails if another process holds it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_retention(dir, AuditRetention::default())
    }

    /// [`EmbeddedStore::open`] with the audit trail kept within `retention`.
    pub fn open_with_retention(
        dir: impl AsRef<Path>,
        retention: AuditRetention,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir.as_ref(), HistoryLimits::DEFAULT, retention)
    }

    fn open_with(
        dir: &Path,
        limits: HistoryLimits,
        retention: AuditRetention,
    ) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let db = tables::open(&dir.join(tables::DB_FILE))?;
        import::prepare(&dir, &db)?;
        let memory = tables::load(&db)?;
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                dir,
                db,
                limits,
                retention: AuditRetention {
                    max_entries: retention.max_entries.max(1),
                    ..retention
                },
                memory: RwLock::new(memory),
                writer: Mutex::new(()),
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
    /// write would get, and returns the change to make and what it was for the audit trail
    /// (or `None` for no write). The entry is attributed to `by`.
    async fn write<T, F>(
        &self,
        by: &Attribution,
        plan: F,
    ) -> Result<Option<(Revision, T)>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Memory, Revision) -> Result<Option<(Change, AuditAction, T)>, StoreError>
            + Send
            + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let by = by.clone();
        tokio::task::spawn_blocking(move || shared.commit(&by, plan))
            .await
            .map_err(|e| task_error("write", e))?
    }
}

/// Takes the exclusive lock on `dir`'s lock file, or says which directory is in use.
fn lock_dir(dir: &Path) -> Result<fd_lock::RwLock<File>, StoreError> {
    let lock_path = dir.join(LOCK_FILE);
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
    Ok(lock)
}

fn task_error(what: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(io::Error::other(format!("store {what} task: {e}")))
}

impl Shared {
    fn memory(&self) -> RwLockReadGuard<'_, Memory> {
        self.memory.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn commit<T>(
        &self,
        by: &Attribution,
        plan: impl FnOnce(&Memory, Revision) -> Result<Option<(Change, AuditAction, T)>, StoreError>,
    ) -> Result<Option<(Revision, T)>, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // Only this writer changes `memory`, so it stays as read here until the publish below.
        // A failed commit changes nothing (redb rolls it back, or refuses every later write
        // after an I/O error until reopened), so the next revision is always the last + 1.
        let (revision, planned) = {
            let memory = self.memory();
            let revision = memory.revision + 1;
            (revision, plan(&memory, revision)?)
        };
        let Some((change, action, result)) = planned else {
            return Ok(None);
        };
        let policy = match &change {
            Change::Put(stored) => Some(stored.policy.metadata.name.as_str()),
            Change::Delete { name } => Some(name.as_str()),
            Change::Halt { .. } => None,
        };
        let entry = by.entry(revision, action, policy);
        let record = trail::Record {
            entry: &entry,
            retention: &self.retention,
        };
        let floor = tables::write_change(&self.db, revision, &change, self.limits, &record)?;
        let mut memory = self.memory.write().unwrap_or_else(PoisonError::into_inner);
        memory.apply(revision, &change, floor);
        // Err only means nobody is watching.
        let _ = self.events.send(Arc::new(WatchEvent { revision, change }));
        drop(memory);
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
        let stored = self.shared.memory().policies.get(name).cloned();
        Ok(stored.map(|p| StoredPolicy::clone(&p)))
    }

    async fn halt_state(&self) -> Result<(bool, Revision), StoreError> {
        let memory = self.shared.memory();
        Ok((memory.halted, memory.revision))
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Under the lock only the `Arc`s are copied; the policies are cloned after it.
        let (revision, halted, shared) = {
            let memory = self.shared.memory();
            let shared: Vec<Arc<StoredPolicy>> = memory.policies.values().cloned().collect();
            (memory.revision, memory.halted, shared)
        };
        Ok(Snapshot {
            revision,
            halted,
            policies: shared.iter().map(|p| StoredPolicy::clone(p)).collect(),
        })
    }

    async fn put(
        &self,
        policy: &ValidPolicy,
        precondition: Precondition,
        by: &Attribution,
    ) -> Result<PutOutcome, StoreError> {
        let policy = policy.policy().clone();
        let written = self
            .write(by, move |memory, revision| {
                let current = memory.revision_of(&policy.metadata.name);
                if !holds(precondition, current) {
                    return Err(StoreError::Conflict { current });
                }
                let change = Change::Put(tables::stamp(policy, revision));
                let action = match current {
                    None => AuditAction::Create,
                    Some(_) => AuditAction::Replace,
                };
                Ok(Some((change, action, current.is_none())))
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
        by: &Attribution,
    ) -> Result<Option<Revision>, StoreError> {
        let name = name.to_owned();
        let written = self
            .write(by, move |memory, _| {
                let current = memory.revision_of(&name);
                if !holds(precondition, current) {
                    return Err(StoreError::Conflict { current });
                }
                Ok(current.map(|_| (Change::Delete { name }, AuditAction::Delete, ())))
            })
            .await?;
        Ok(written.map(|(revision, ())| revision))
    }

    async fn set_halted(&self, halted: bool, by: &Attribution) -> Result<Revision, StoreError> {
        let action = AuditAction::of_halt(halted);
        let written = self
            .write(by, move |_, _| {
                Ok(Some((Change::Halt { halted }, action, ())))
            })
            .await?;
        written
            .map(|(revision, ())| revision)
            .ok_or_else(|| StoreError::Io(io::Error::other("halt planned no write (store bug)")))
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let shared = Arc::clone(&self.shared);
        let query = query.clone();
        tokio::task::spawn_blocking(move || trail::read(&shared.db, &query, &shared.retention))
            .await
            .map_err(|e| task_error("audit read", e))?
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let (events, revision, floor) = {
            let memory = self.shared.memory();
            (
                self.shared.events.subscribe(),
                memory.revision,
                memory.history_floor,
            )
        };
        if after < floor {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: floor,
            });
        }
        let watch = Watch {
            shared: Arc::downgrade(&self.shared),
            events,
            pending: VecDeque::new(),
            last: after,
            catch_up_to: revision,
            finished: false,
        };
        Ok(futures::stream::unfold(watch, Watch::next).boxed())
    }
}

struct Watch {
    /// Weak, so an open watch does not keep the store (and its directory lock) alive.
    shared: Weak<Shared>,
    events: broadcast::Receiver<Arc<WatchEvent>>,
    /// Events read from the history, still to yield.
    pending: VecDeque<WatchEvent>,
    /// Revision of the last event yielded (or the `after` asked for).
    last: Revision,
    /// Events up to this revision come from the history; live events follow them.
    catch_up_to: Revision,
    finished: bool,
}

impl Watch {
    /// The next event: history first, then live events; an error is yielded once and ends
    /// the stream.
    async fn next(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        while !self.finished {
            match self.next_event().await {
                // Live events can repeat what the history already gave.
                Ok(event) if event.revision <= self.last => {}
                Ok(event) => {
                    self.last = event.revision;
                    return Some((Ok(event), self));
                }
                Err(e) => {
                    self.finished = true;
                    return Some((Err(e), self));
                }
            }
        }
        None
    }

    async fn next_event(&mut self) -> Result<WatchEvent, StoreError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            // Everything queued was yielded, so `last` is where the history read resumes.
            if self.last < self.catch_up_to {
                self.read_history().await?;
                continue;
            }
            match self.events.recv().await {
                Ok(event) => return Ok(WatchEvent::clone(&event)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // The missed events are in the history unless it moved past them.
                    log::debug!("embedded watch lagged by {missed} events; replaying history");
                    let shared = self.shared.upgrade().ok_or_else(closed)?;
                    self.catch_up_to = shared.memory().revision;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(closed()),
            }
        }
    }

    /// Queues the next batch of history events after `last`.
    async fn read_history(&mut self) -> Result<(), StoreError> {
        let shared = self.shared.upgrade().ok_or_else(closed)?;
        let (after, upto) = (self.last, self.catch_up_to);
        let batch = tokio::task::spawn_blocking(move || {
            tables::read_history(&shared.db, after, upto, HISTORY_BATCH)
        })
        .await
        .map_err(|e| task_error("history read", e))??;
        if batch.is_empty() {
            // Every revision up to the store's has an event, and the floor was checked in the
            // same read: a gap means the file was changed behind the store's back.
            return Err(StoreError::Corrupt {
                key: format!("{}: history", tables::DB_FILE),
                reason: format!("no events after revision {after} up to {upto}"),
            });
        }
        self.pending.extend(batch);
        Ok(())
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("embedded store closed".into())
}

#[cfg(test)]
mod tests;
