//! What the watcher and the HTTP handlers share: the current view, a bounded history of recent
//! entries for resume, and the fan-out ring.
//!
//! One `RwLock` orders everything: the watcher appends an entry to the history and sends it on
//! the ring while holding it for writing, and a new client subscribes to the ring and reads the
//! view while holding it for reading. So a client's starting point (snapshot or resume) and its
//! first live entry meet exactly, with no gap and no duplicate.
//!
//! The ring is a `tokio::sync::broadcast` channel: one shared buffer of `client_buffer` entries,
//! a sender that never waits for receivers, and a receiver per stream client that costs a
//! cursor. A client that falls more than `client_buffer` entries behind finds its place
//! overwritten (`Lagged`) and is cut off with a `resync` event; nobody else notices.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use actix_web::web::Bytes;
use boifi_policy::wire::{DeleteData, Filter, HaltData, SnapshotData};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, watch};

use crate::config::Settings;
use crate::metrics::{EventKind, Metrics, Mode};
use crate::model::{Delta, Policies, PolicyView};
use crate::sse;

/// Distinct filters whose snapshot is cached per view; more are built on every request.
const MAX_CACHED_SNAPSHOTS: usize = 4096;

/// What travels on the ring.
#[derive(Clone)]
pub(crate) enum RingItem {
    Entry(Arc<Entry>),
    Ping,
}

/// One change clients may hear about, with its frames rendered once.
pub(crate) struct Entry {
    /// Position in this broadcaster's sequence of entries (1, 2, ...).
    pub seq: u64,
    /// The store revision clients see as the event id.
    pub revision: u64,
    /// Not the first entry of its revision (an expiry, or part of a reload); such entries are
    /// replayed to clients resuming *at* their revision, since those may have missed them.
    pub secondary: bool,
    received: Instant,
    body: Body,
    /// Stream clients that have yet to take this entry, for the fan-out histogram: the sender
    /// adds the number of receivers, each receiver subtracts one, and whoever brings it to zero
    /// records the time since `received`.
    pending: AtomicI64,
}

enum Body {
    Policy {
        new: Option<(Arc<PolicyView>, Bytes)>,
        old: Option<Arc<PolicyView>>,
        delete: Bytes,
    },
    Halt(Bytes),
}

impl Entry {
    fn new(seq: u64, revision: u64, secondary: bool, received: Instant, delta: Delta) -> Entry {
        let body = match delta {
            Delta::Policy { name, new, old } => Body::Policy {
                new: new.map(|view| {
                    let frame = sse::event(revision, EventKind::Policy, view.json.get().as_bytes());
                    (view, frame)
                }),
                old,
                delete: sse::json_event(revision, EventKind::Delete, &DeleteData { name }),
            },
            Delta::Halt(halted) => Body::Halt(sse::json_event(
                revision,
                EventKind::Halt,
                &HaltData { halted },
            )),
        };
        Entry {
            seq,
            revision,
            secondary,
            received,
            body,
            pending: AtomicI64::new(0),
        }
    }

    /// The frame a client with `filter` gets: the policy when it may apply to the client, a
    /// delete when only its previous version did, nothing when neither did.
    pub fn frame_for(&self, filter: &Filter) -> Option<(EventKind, Bytes)> {
        match &self.body {
            Body::Halt(frame) => Some((EventKind::Halt, frame.clone())),
            Body::Policy { new, old, delete } => {
                if let Some((view, frame)) = new {
                    if filter.admits(&view.selector) {
                        return Some((EventKind::Policy, frame.clone()));
                    }
                }
                match old {
                    Some(old) if filter.admits(&old.selector) => {
                        Some((EventKind::Delete, delete.clone()))
                    }
                    _ => None,
                }
            }
        }
    }

    fn sent_to(&self, receivers: usize, metrics: &Metrics) {
        if receivers > 0 {
            self.settle(i64::try_from(receivers).unwrap_or(i64::MAX), metrics);
        }
    }

    /// A stream client has handled (sent or skipped) this entry.
    pub fn taken(&self, metrics: &Metrics) {
        self.settle(-1, metrics);
    }

    fn settle(&self, change: i64, metrics: &Metrics) {
        let before = self.pending.fetch_add(change, Ordering::AcqRel);
        // Before the sender's add the count is <= 0, after it only falls: it reaches zero from
        // a non-zero value exactly once.
        if before != 0 && before + change == 0 {
            metrics
                .fanout_seconds
                .observe(self.received.elapsed().as_secs_f64());
        }
    }
}

/// Everything clients receive, at one point of the entry sequence.
pub(crate) struct View {
    pub revision: u64,
    pub halted: bool,
    /// The last entry this view includes.
    pub seq: u64,
    policies: Policies,
    snapshots: Mutex<HashMap<Filter, Bytes>>,
}

impl View {
    /// `event: snapshot` for `filter`, built once per filter and view. Policies are spliced
    /// in as serialized when they changed (`RawValue`), not serialized again.
    pub fn snapshot_frame(&self, filter: &Filter) -> Bytes {
        let mut cache = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(frame) = cache.get(filter) {
            return frame.clone();
        }
        let data = SnapshotData {
            revision: self.revision,
            halted: self.halted,
            policies: self
                .policies
                .values()
                .filter(|policy| filter.admits(&policy.selector))
                .map(|policy| &*policy.json)
                .collect::<Vec<&RawValue>>(),
        };
        let frame = sse::json_event(self.revision, EventKind::Snapshot, &data);
        if cache.len() < MAX_CACHED_SNAPSHOTS {
            cache.insert(filter.clone(), frame.clone());
        }
        frame
    }
}

/// Why a client request is refused (all are 503: try again later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the first snapshot of the store has not been loaded yet")]
    NotReady,
    #[error("the broadcaster is shutting down")]
    ShuttingDown,
    #[error("too many clients")]
    TooManyClients,
}

/// Where a new stream client starts.
pub(crate) struct StreamStart {
    /// `retry:`, then a snapshot or the missed entries.
    pub frames: Vec<(EventKind, Bytes)>,
    pub ring: broadcast::Receiver<RingItem>,
    /// Entries up to this sequence number are already covered by `frames`.
    pub covered_seq: u64,
}

/// The outcome of a long-poll check.
pub(crate) enum PollCheck {
    /// Send this snapshot and end.
    Respond(Bytes),
    /// The client is current as of `revision` (entry `seq`); wait for later entries.
    Wait { seq: u64, revision: u64 },
}

/// How a client at some revision stands, for the sidecar table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lag {
    /// No change after its revision concerns it.
    Current,
    /// The oldest change after its revision that concerns it arrived at `since`.
    Behind { since: Instant },
    /// No revision, or one outside what this broadcaster can vouch for: a poll from it is
    /// answered with a snapshot at once.
    Unknown,
}

/// Counts one connected client while alive.
pub(crate) struct ClientGuard {
    hub: Arc<Hub>,
    mode: Mode,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.hub.clients.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.clients(self.mode).dec();
    }
}

struct State {
    /// `None` until the first snapshot is loaded.
    view: Option<Arc<View>>,
    history: VecDeque<Arc<Entry>>,
    /// Clients can resume from any revision `r` with `floor <= r <= view.revision`: every entry
    /// they may have missed is still in `history`.
    floor: u64,
    next_seq: u64,
    /// `None` once shut down: receivers then see the channel closed.
    ring: Option<broadcast::Sender<RingItem>>,
}

pub(crate) struct Hub {
    state: RwLock<State>,
    /// The last committed entry's `seq`; long polls wait on it.
    changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    pub metrics: Metrics,
    pub settings: Settings,
    clients: AtomicUsize,
}

impl Hub {
    pub fn new(settings: Settings, metrics: Metrics) -> Hub {
        let (ring, _) = broadcast::channel(settings.client_buffer.max(1));
        Hub {
            state: RwLock::new(State {
                view: None,
                history: VecDeque::new(),
                floor: 0,
                next_seq: 1,
                ring: Some(ring),
            }),
            changed: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            metrics,
            settings,
            clients: AtomicUsize::new(0),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state is replaced whole under the lock, so it is consistent even after a panic.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a new view and the deltas that lead to it. The first call only sets the view:
    /// nobody is connected before it.
    pub fn commit(
        &self,
        revision: u64,
        halted: bool,
        policies: Policies,
        deltas: Vec<Delta>,
        mut secondary: bool,
        received: Instant,
    ) {
        let mut state = self.write();
        let first = state.view.is_none();
        if first {
            state.floor = revision;
        } else {
            for delta in deltas {
                let seq = state.next_seq;
                state.next_seq += 1;
                let entry = Arc::new(Entry::new(seq, revision, secondary, received, delta));
                // Later entries of the same revision (a halt plus policies in one reload)
                // are secondary too.
                secondary = true;
                state.history.push_back(entry.clone());
                while state.history.len() > self.settings.history.max(1) {
                    if let Some(dropped) = state.history.pop_front() {
                        let floor = if dropped.secondary {
                            dropped.revision + 1
                        } else {
                            dropped.revision
                        };
                        state.floor = state.floor.max(floor);
                    }
                }
                if let Some(ring) = &state.ring {
                    let receivers = ring.send(RingItem::Entry(entry.clone())).unwrap_or(0);
                    entry.sent_to(receivers, &self.metrics);
                }
            }
        }
        let seq = state.next_seq - 1;
        state.view = Some(Arc::new(View {
            revision,
            halted,
            seq,
            policies,
            snapshots: Mutex::new(HashMap::new()),
        }));
        drop(state);
        self.metrics
            .revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        self.changed.send_replace(seq);
        if first {
            log::info!("first snapshot loaded at revision {revision}");
        }
    }

    /// Sends a heartbeat to every stream client.
    pub fn ping(&self) {
        if let Some(ring) = &self.read().ring {
            let _ = ring.send(RingItem::Ping);
        }
    }

    /// Ends every stream and long poll; refuses new ones.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
        self.write().ring = None;
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current store revision, once loaded.
    pub fn revision(&self) -> Option<u64> {
        self.read().view.as_ref().map(|view| view.revision)
    }

    /// The store revision served and the kill switch, once loaded.
    pub fn position(&self) -> Option<(u64, bool)> {
        self.read()
            .view
            .as_ref()
            .map(|view| (view.revision, view.halted))
    }

    /// How a client with `filter` that is at `revision` stands. "Concerns" is the rule polls
    /// are answered by ([`Hub::poll_check`]): an entry after the revision with a frame for the
    /// filter. A revision newer than this broadcaster's is current (nothing here is newer).
    pub fn lag(&self, filter: &Filter, revision: Option<u64>) -> Lag {
        let state = self.read();
        let (Some(view), Some(revision)) = (state.view.as_ref(), revision) else {
            return Lag::Unknown;
        };
        if revision >= view.revision {
            return Lag::Current;
        }
        if revision < state.floor {
            return Lag::Unknown;
        }
        state
            .history
            .iter()
            .rev()
            .take_while(|entry| entry.revision > revision)
            .filter(|entry| entry.frame_for(filter).is_some())
            .last()
            .map_or(Lag::Current, |oldest| Lag::Behind {
                since: oldest.received,
            })
    }

    /// Counts a new client, unless the limit is reached.
    pub fn admit(self: &Arc<Self>, mode: Mode) -> Result<ClientGuard, Refusal> {
        let max = self.settings.max_clients;
        let admitted = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.metrics.clients_rejected.inc();
            return Err(Refusal::TooManyClients);
        }
        self.metrics.clients(mode).inc();
        Ok(ClientGuard {
            hub: self.clone(),
            mode,
        })
    }

    /// Starts a stream: the entries after `last_id` when they are all still known, else a
    /// snapshot; then live entries from the returned ring receiver.
    pub fn open_stream(
        &self,
        filter: &Filter,
        last_id: Option<u64>,
    ) -> Result<StreamStart, Refusal> {
        let state = self.read();
        let ring = state.ring.as_ref().ok_or(Refusal::ShuttingDown)?;
        let view = state.view.as_ref().ok_or(Refusal::NotReady)?;
        let receiver = ring.subscribe();
        let mut frames = Vec::new();
        match last_id.filter(|id| (state.floor..=view.revision).contains(id)) {
            Some(id) => frames.extend(
                state
                    .history
                    .iter()
                    .filter(|entry| {
                        entry.revision > id || (entry.revision == id && entry.secondary)
                    })
                    .filter_map(|entry| entry.frame_for(filter)),
            ),
            None => frames.push((EventKind::Snapshot, view.snapshot_frame(filter))),
        }
        Ok(StreamStart {
            frames,
            ring: receiver,
            covered_seq: view.seq,
        })
    }

    /// First look of a long poll from `revision`: respond at once when the client is behind
    /// (or unknown), else wait.
    pub fn poll_check(&self, filter: &Filter, revision: Option<u64>) -> Result<PollCheck, Refusal> {
        let state = self.read();
        if state.ring.is_none() {
            return Err(Refusal::ShuttingDown);
        }
        let view = state.view.as_ref().ok_or(Refusal::NotReady)?;
        let Some(revision) = revision.filter(|r| (state.floor..=view.revision).contains(r)) else {
            return Ok(PollCheck::Respond(view.snapshot_frame(filter)));
        };
        let behind = state
            .history
            .iter()
            .rev()
            .take_while(|entry| entry.revision > revision)
            .any(|entry| entry.frame_for(filter).is_some());
        Ok(if behind {
            PollCheck::Respond(view.snapshot_frame(filter))
        } else {
            PollCheck::Wait {
                seq: view.seq,
                revision: view.revision,
            }
        })
    }

    /// Later look of a long poll that was current at entry `seq`.
    pub fn poll_recheck(&self, filter: &Filter, seq: u64) -> PollCheck {
        let state = self.read();
        let Some(view) = state.view.as_ref() else {
            return PollCheck::Wait { seq, revision: 0 };
        };
        let trimmed = view.seq > seq
            && state
                .history
                .front()
                .is_none_or(|oldest| oldest.seq > seq + 1);
        let concerned = trimmed
            || state
                .history
                .iter()
                .rev()
                .take_while(|entry| entry.seq > seq)
                .any(|entry| entry.frame_for(filter).is_some());
        if concerned {
            PollCheck::Respond(view.snapshot_frame(filter))
        } else {
            PollCheck::Wait {
                seq: view.seq,
                revision: view.revision,
            }
        }
    }
}

#[cfg(test)]
mod tests;
