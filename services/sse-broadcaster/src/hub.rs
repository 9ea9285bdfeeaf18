//! What the watcher and the HTTP handlers share: the current view, a bounded history of recent
//! entries for resume, and the clients waiting for changes.
//!
//! A `RwLock` orders everything: the watcher appends entries to the history and publishes a
//! new view while holding it for writing, and a new client reads the view (and the history,
//! to resume) and registers while holding it for reading. So a client's starting point
//! (snapshot or resume) and the first change it is handed meet exactly, with no gap and no
//! duplicate.
//!
//! Waiting clients sit in a [`Registry`] indexed by the namespace and service names their
//! filters give. A change is handed only to the clients whose filter admits its policy's new
//! or old selector (every client for halt and resume): a held poll is woken once (a oneshot
//! channel) and answers with the new view's snapshot; a stream client gets the entry on its
//! own bounded queue. Nobody else is woken, so a change that selects one workload costs in
//! proportion to that workload's clients. A stream client whose queue is full (it fell
//! `client_buffer` entries behind) gets a last `CutOff` item instead and leaves the registry;
//! nobody else notices. Lock order: the state, then the registry; the watcher lets go of the
//! state once it holds the registry, so new clients wait only for the registration.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use actix_web::web::Bytes;
use boifi_policy::wire::{DeleteData, Filter, HaltData, SnapshotData};
use foldhash::HashMap;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Settings;
use crate::metrics::{EventKind, Metrics, Mode};
use crate::model::{Delta, Policies, PolicyView};
use crate::registry::{Id, Registry};
use crate::sse;

/// Distinct filters whose snapshot is cached per view; more are built on every request.
const MAX_CACHED_SNAPSHOTS: usize = 4096;

/// What a stream client's queue carries.
pub(crate) enum StreamItem {
    /// A change that concerns the client.
    Entry(Arc<Entry>),
    Ping,
    /// The client fell behind; nothing follows.
    CutOff,
}

/// One change clients may hear about, with its frames rendered once.
pub(crate) struct Entry {
    /// The store revision clients see as the event id.
    pub revision: u64,
    /// Not the first entry of its revision (an expiry, or part of a reload); such entries are
    /// replayed to clients resuming *at* their revision, since those may have missed them.
    pub secondary: bool,
    received: Instant,
    body: Body,
    /// Clients that have yet to take this entry, for the fan-out histogram: the sender adds
    /// the number of clients it handed the entry to, each client subtracts one, and whoever
    /// brings it to zero records the time since `received`.
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
    fn new(revision: u64, secondary: bool, received: Instant, delta: Delta) -> Entry {
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

    /// Whether a client with `filter` gets a frame of this entry.
    pub fn concerns(&self, filter: &Filter) -> bool {
        match &self.body {
            Body::Halt(_) => true,
            Body::Policy { new, old, .. } => {
                new.as_ref()
                    .is_some_and(|(view, _)| filter.admits(&view.selector))
                    || old.as_ref().is_some_and(|old| filter.admits(&old.selector))
            }
        }
    }

    /// The registered clients this entry may concern, each once, into `out`.
    fn candidates(&self, registry: &Registry<Waiter>, out: &mut Vec<Id>) {
        match &self.body {
            Body::Halt(_) => {
                out.clear();
                out.extend(registry.ids());
            }
            Body::Policy { new, old, .. } => registry.candidates(
                new.iter()
                    .map(|(view, _)| &view.selector)
                    .chain(old.iter().map(|old| &old.selector)),
                out,
            ),
        }
    }

    fn sent_to(&self, clients: usize, metrics: &Metrics) {
        if clients > 0 {
            self.settle(i64::try_from(clients).unwrap_or(i64::MAX), metrics);
        }
    }

    /// A client has handled (sent or skipped) this entry.
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

/// Everything clients receive, as of one revision.
pub(crate) struct View {
    pub revision: u64,
    pub halted: bool,
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

/// How the hub reaches a registered client.
pub(crate) enum Waiter {
    /// A held poll: woken once, then out of the registry.
    Poll(oneshot::Sender<Wake>),
    /// A stream client's queue: `client_buffer` entries plus one slot for `CutOff`.
    Stream(mpsc::Sender<StreamItem>),
}

/// What wakes a held poll: the first change that concerns it and the view it is part of.
pub(crate) struct Wake {
    entry: Arc<Entry>,
    view: Arc<View>,
}

/// A registered client; dropping it leaves the registry.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    id: Id,
    /// Still in the registry, as far as this side knows.
    registered: bool,
}

impl Subscription {
    fn new(hub: &Arc<Hub>, id: Id) -> Subscription {
        Subscription {
            hub: hub.clone(),
            id,
            registered: true,
        }
    }

    /// The hub let go of the client (a poll it woke): nothing to remove on drop, so a woken
    /// poll does not wait for the registry while the hub is still waking the others.
    fn left(&mut self) {
        self.registered = false;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.registered {
            self.hub.registry().remove(self.id);
        }
    }
}

/// Where a new stream client starts.
pub(crate) struct StreamStart {
    /// A snapshot, or the missed entries.
    pub frames: Vec<(EventKind, Bytes)>,
    /// Every later entry that concerns the client, in order.
    pub items: mpsc::Receiver<StreamItem>,
    pub subscription: Subscription,
}

/// The outcome of a long poll's first look.
pub(crate) enum PollCheck {
    /// Answer at once with this view's snapshot.
    Respond(Arc<View>),
    /// The client is current; it is registered and waits.
    Wait(PollWait),
}

/// How a long poll ends.
pub(crate) enum PollAnswer {
    /// A change concerned the client: this snapshot.
    Snapshot(Bytes),
    /// Nothing for the client up to this revision.
    Current(u64),
}

/// A held long poll, registered with the hub.
pub(crate) struct PollWait {
    subscription: Subscription,
    woken: oneshot::Receiver<Wake>,
    filter: Arc<Filter>,
    /// The revision of the view the client registered at: it is current there.
    revision: u64,
}

impl PollWait {
    /// Waits for a change that concerns the client, until `deadline` or shutdown.
    pub async fn until(mut self, deadline: tokio::time::Instant) -> PollAnswer {
        tokio::select! {
            woken = &mut self.woken => {
                // Woken or shut down: either way the registry let go of the client.
                self.subscription.left();
                match woken {
                    Ok(wake) => self.answer(wake),
                    Err(_) => PollAnswer::Current(self.revision),
                }
            }
            () = tokio::time::sleep_until(deadline) => self.time_out(),
        }
    }

    fn answer(&self, wake: Wake) -> PollAnswer {
        wake.entry.taken(&self.subscription.hub.metrics);
        PollAnswer::Snapshot(wake.view.snapshot_frame(&self.filter))
    }

    /// A commit publishes its view under the state lock and hands its entries out under the
    /// registry lock, taken before it lets go of the state. So with the state lock (the view
    /// is fixed) and then the registry (every hand-out up to that view is done): either the
    /// client is still registered, and nothing up to the view concerned it, or a change woke it.
    fn time_out(&mut self) -> PollAnswer {
        let hub = self.subscription.hub.clone();
        let state = hub.read();
        let registered = hub.registry().remove(self.subscription.id).is_some();
        self.subscription.left();
        if registered {
            let revision = state.view.as_ref().map_or(0, |view| view.revision);
            return PollAnswer::Current(revision.max(self.revision));
        }
        drop(state);
        match self.woken.try_recv() {
            Ok(wake) => self.answer(wake),
            Err(_) => PollAnswer::Current(self.revision),
        }
    }
}

impl Drop for PollWait {
    fn drop(&mut self) {
        // A wake this poll will not answer still counts for the fan-out histogram.
        self.woken.close();
        if let Ok(wake) = self.woken.try_recv() {
            wake.entry.taken(&self.subscription.hub.metrics);
        }
    }
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
    /// New clients are refused; the registry is empty.
    shut_down: bool,
}

pub(crate) struct Hub {
    state: RwLock<State>,
    registry: Mutex<Registry<Waiter>>,
    shutdown: watch::Sender<bool>,
    pub metrics: Metrics,
    pub settings: Settings,
    clients: AtomicUsize,
}

impl Hub {
    pub fn new(settings: Settings, metrics: Metrics) -> Hub {
        Hub {
            state: RwLock::new(State {
                view: None,
                history: VecDeque::new(),
                floor: 0,
                shut_down: false,
            }),
            registry: Mutex::new(Registry::default()),
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

    fn registry(&self) -> MutexGuard<'_, Registry<Waiter>> {
        // Every registry operation leaves it consistent.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a new view and the deltas that lead to it, and hands each delta to the
    /// clients it concerns. The first call only sets the view: nobody is connected before it.
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
        let mut entries = Vec::with_capacity(deltas.len());
        if first {
            state.floor = revision;
        } else {
            for delta in deltas {
                let entry = Arc::new(Entry::new(revision, secondary, received, delta));
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
                entries.push(entry);
            }
        }
        let view = Arc::new(View {
            revision,
            halted,
            policies,
            snapshots: Mutex::new(HashMap::default()),
        });
        state.view = Some(view.clone());
        if !entries.is_empty() && !state.shut_down {
            let mut polls = Vec::new();
            {
                let mut registry = self.registry();
                // Clients that register from here on start from the new view.
                drop(state);
                let mut ids = Vec::new();
                for entry in &entries {
                    self.hand_out(&mut registry, entry, &mut ids, &mut polls);
                }
            }
            // Out of the registry already; woken once it is free again, so the polls their
            // clients send next register without waiting.
            for (poll, entry) in polls {
                let wake = Wake {
                    entry,
                    view: view.clone(),
                };
                if let Err(unheard) = poll.send(wake) {
                    unheard.entry.taken(&self.metrics);
                }
            }
        } else {
            drop(state);
        }
        self.metrics
            .revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        if first {
            log::info!("first snapshot loaded at revision {revision}");
        }
    }

    /// Hands `entry` to every registered client it concerns: queued for streams, and for held
    /// polls taken out of the registry into `polls`, to be woken by the caller.
    fn hand_out(
        &self,
        registry: &mut Registry<Waiter>,
        entry: &Arc<Entry>,
        ids: &mut Vec<Id>,
        polls: &mut Vec<(oneshot::Sender<Wake>, Arc<Entry>)>,
    ) {
        entry.candidates(registry, ids);
        let mut handed = 0;
        for &id in ids.iter() {
            let Some((filter, waiter)) = registry.get(id) else {
                continue;
            };
            if !entry.concerns(filter) {
                continue;
            }
            match waiter {
                Waiter::Stream(queue)
                    if queue.capacity() > 1
                        && queue.try_send(StreamItem::Entry(entry.clone())).is_ok() =>
                {
                    handed += 1;
                }
                Waiter::Stream(queue) => {
                    // Full (or closed): the last slot is kept for this.
                    let _ = queue.try_send(StreamItem::CutOff);
                    registry.remove(id);
                }
                Waiter::Poll(_) => {
                    if let Some(Waiter::Poll(poll)) = registry.remove(id) {
                        polls.push((poll, entry.clone()));
                        handed += 1;
                    }
                }
            }
        }
        entry.sent_to(handed, &self.metrics);
    }

    /// Sends a heartbeat to every stream client; one with a full queue is cut off.
    pub fn ping(&self) {
        let mut registry = self.registry();
        let mut full = Vec::new();
        for (id, waiter) in registry.values() {
            if let Waiter::Stream(queue) = waiter {
                if queue.capacity() > 1 {
                    let _ = queue.try_send(StreamItem::Ping);
                } else {
                    let _ = queue.try_send(StreamItem::CutOff);
                    full.push(id);
                }
            }
        }
        for id in full {
            registry.remove(id);
        }
    }

    /// Ends every stream and long poll; refuses new ones.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
        let mut state = self.write();
        state.shut_down = true;
        // Dropping the senders ends every stream (after what it has queued) and wakes every
        // held poll.
        self.registry().clear();
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The current store revision, once loaded.
    pub fn revision(&self) -> Option<u64> {
        self.read().view.as_ref().map(|view| view.revision)
    }

    /// Clients waiting for changes (held polls and open streams).
    #[cfg(test)]
    pub fn registered(&self) -> usize {
        self.registry().len()
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
            .filter(|entry| entry.concerns(filter))
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
    /// snapshot; then the later entries that concern the client, on its queue.
    pub fn open_stream(
        self: &Arc<Self>,
        filter: &Arc<Filter>,
        last_id: Option<u64>,
    ) -> Result<StreamStart, Refusal> {
        let state = self.read();
        if state.shut_down {
            return Err(Refusal::ShuttingDown);
        }
        let view = state.view.as_ref().ok_or(Refusal::NotReady)?;
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
        let (queue, items) = mpsc::channel(self.settings.client_buffer.max(1) + 1);
        let id = self
            .registry()
            .insert(filter.clone(), Waiter::Stream(queue));
        Ok(StreamStart {
            frames,
            items,
            subscription: Subscription::new(self, id),
        })
    }

    /// First look of a long poll from `revision`: respond at once when the client is behind
    /// (or unknown), else register it to wait.
    pub fn poll_check(
        self: &Arc<Self>,
        filter: &Arc<Filter>,
        revision: Option<u64>,
    ) -> Result<PollCheck, Refusal> {
        let state = self.read();
        if state.shut_down {
            return Err(Refusal::ShuttingDown);
        }
        let view = state.view.as_ref().ok_or(Refusal::NotReady)?;
        let Some(revision) = revision.filter(|r| (state.floor..=view.revision).contains(r)) else {
            return Ok(PollCheck::Respond(view.clone()));
        };
        let behind = state
            .history
            .iter()
            .rev()
            .take_while(|entry| entry.revision > revision)
            .any(|entry| entry.concerns(filter));
        if behind {
            return Ok(PollCheck::Respond(view.clone()));
        }
        let (wake, woken) = oneshot::channel();
        let id = self.registry().insert(filter.clone(), Waiter::Poll(wake));
        Ok(PollCheck::Wait(PollWait {
            subscription: Subscription::new(self, id),
            woken,
            filter: filter.clone(),
            revision: view.revision,
        }))
    }
}

#[cfg(test)]
mod tests;
