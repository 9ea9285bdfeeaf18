//! The sidecar table (`docs/sidecar-status.md`): which sidecars poll this replica, the
//! revision each enforces, whether it is current, and the fault counts it reports.
//!
//! Per replica and in memory: a poll's report headers (`boifi_policy::wire::sidecars`) update
//! its sidecar's entry when the poll arrives, and the entry notes when the poll ends. Nothing
//! is written to the store, so 10,000 sidecars cost no store write per poll; policy-api
//! gathers the tables of all replicas.
//!
//! - [`Table`]: the plain logic (liveness, merging reports, bounds, paging, current or behind),
//!   with time passed in.
//! - [`SidecarTable`]: the table behind a lock, with its metrics, as the poll handler
//!   ([`SidecarTable::poll_arrived`], a guard that notes the poll's end) and `GET /v1/sidecars`
//!   ([`sidecars`]) use it; [`sweep`] forgets sidecars that stopped polling and refreshes the
//!   gauges every second.
//!
//! A sidecar is **live** while a poll of it is held, or for `BOIFI_SIDECAR_TTL_SECS` after its
//! last poll ended. It is **current** when no change after its revision concerns its filter,
//! by the rule the hub answers polls by ([`crate::hub::Hub::lag`]); else **behind**, since the
//! oldest such change arrived.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest};
use boifi_policy::wire::{
    parse_injected, FaultCounts, Filter, ReportError, SidecarIdentity, SidecarState, SidecarStatus,
    SidecarsPage, SidecarsQuery, INJECTED_HEADER, SIDECAR_HEADER,
};
// Seeded per process (the headers come from clients), and quicker than SipHash on a
// 200-byte identity header hashed for every poll.
use foldhash::{HashMap, HashMapExt};
use prometheus::{Gauge, IntCounter, IntGaugeVec, Opts, Registry};

use crate::error::RequestError;
use crate::hub::{Hub, Lag};
use crate::stream::StreamRequest;

/// Policies whose counts one sidecar's entry keeps; past it the one reported longest ago goes.
pub(crate) const MAX_POLICIES_PER_SIDECAR: usize = 1024;
/// How long a sidecar whose held poll was cut off (its connection closed: the Envoy stopped,
/// or gave up on the poll) stays listed without polling again, at most the TTL. A restarted
/// Envoy polls again within a second; a deleted pod never does, and should not keep
/// `apply --wait` waiting for a full TTL.
pub(crate) const CUT_OFF_TTL: Duration = Duration::from_secs(5);
/// How often dead sidecars are forgotten and the gauges refreshed.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// At most one warning per this interval about bad report headers (the rest are counted).
const BAD_REPORT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A sidecar's place in the table: sorted by namespace, then pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    namespace: String,
    pod: String,
}

impl Key {
    /// The `continue` token of a page ending at this key: both names in hex, so any bytes
    /// survive and the token is opaque.
    fn token(&self) -> String {
        format!("{}.{}", hex(&self.namespace), hex(&self.pod))
    }

    fn from_token(token: &str) -> Option<Key> {
        let (namespace, pod) = token.split_once('.')?;
        Some(Key {
            namespace: unhex(namespace)?,
            pod: unhex(pod)?,
        })
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// What the table keeps of one poll.
#[derive(Debug, Clone)]
pub(crate) struct Poll<'a> {
    pub identity: SidecarIdentity,
    /// The identity header as it came: a later poll that repeats it byte for byte is the same
    /// sidecar and is not parsed again ([`Table::arrive_again`]).
    pub report: Cow<'a, [u8]>,
    /// `None`: no (usable) counts came with it.
    pub injected: Option<BTreeMap<String, FaultCounts>>,
    /// Borrowed from the request: copied only when it differs from the one kept.
    pub filter: Cow<'a, Filter>,
    /// The poll's `revision`: what the sidecar enforces (`None` before its first snapshot).
    pub revision: Option<u64>,
}

/// A sidecar's handle in the table, for as long as it stays there (never reused).
pub(crate) type SidecarId = u64;

/// One sidecar.
#[derive(Debug)]
struct Sidecar {
    key: Key,
    /// Its last identity header, as sent (shared with [`Table::reports`]).
    report: Arc<[u8]>,
    workload: String,
    labels: Option<BTreeMap<String, String>>,
    filter: Filter,
    revision: Option<u64>,
    first_seen: SystemTime,
    last_seen: SystemTime,
    /// When its last poll arrived or ended.
    last_seen_at: Instant,
    /// When its last poll arrived.
    arrived_at: Instant,
    /// Polls of it held now (one, but for a moment when the sidecar's polling VM changes).
    held: u32,
    /// Whether its last poll ended cut off rather than answered.
    cut_off: bool,
    /// Latest cumulative counts per policy, and when each was last reported.
    injected: BTreeMap<String, (FaultCounts, Instant)>,
}

/// How a poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Answered (a change, its wait ran out, or refused).
    Answered,
    /// Its connection closed while it was held.
    CutOff,
}

/// The table was full: the sidecar is not tracked (its poll is served all the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// Live sidecars by state, and the largest lag.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Census {
    pub current: usize,
    pub behind: usize,
    /// The largest `behind_seconds`; 0 when none is behind.
    pub max_lag_seconds: f64,
}

/// The sidecars of one replica, with time passed in.
#[derive(Debug)]
pub(crate) struct Table {
    /// By handle: a poll finds its sidecar by hashing a number, not by comparing names.
    sidecars: HashMap<SidecarId, Sidecar>,
    /// Handles in page order (namespace, then pod).
    order: BTreeMap<Key, SidecarId>,
    /// Each sidecar's last identity header to its handle. A sidecar sends the same header
    /// with every poll, so all polls but its first skip parsing it (JSON with the pod's
    /// labels: a sizeable share of a poll's cost when a change answers thousands at once).
    reports: HashMap<Arc<[u8]>, SidecarId>,
    next_id: SidecarId,
    ttl: Duration,
    max: usize,
}

impl Table {
    /// A table that forgets a sidecar `ttl` after its last poll ended and tracks at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Table {
        Table {
            sidecars: HashMap::new(),
            order: BTreeMap::new(),
            reports: HashMap::new(),
            next_id: 0,
            ttl,
            max,
        }
    }

    /// Sidecars in the table (live or not swept yet).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sidecars.len()
    }

    fn is_live(&self, sidecar: &Sidecar, now: Instant) -> bool {
        is_live(sidecar, now, self.ttl)
    }

    /// A poll arrived at `now` (`wall` by the wall clock): the sidecar's entry is created or
    /// updated and counts one more held poll. The reported counts replace the ones kept for
    /// the same policies (they are cumulative; a restarted Envoy starts again from 0).
    pub fn arrive(
        &mut self,
        poll: Poll<'_>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<SidecarId, Full> {
        let Poll {
            identity,
            report,
            injected,
            filter,
            revision,
        } = poll;
        let key = Key {
            namespace: identity.namespace,
            pod: identity.pod,
        };
        let id = match self.order.get(&key) {
            Some(&id) => id,
            None if self.sidecars.len() >= self.max => return Err(Full),
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.order.insert(key.clone(), id);
                id
            }
        };
        let sidecar = self.sidecars.entry(id).or_insert_with(|| Sidecar {
            key,
            report: Arc::from(&[][..]),
            workload: String::new(),
            labels: None,
            filter: Filter::default(),
            revision: None,
            first_seen: wall,
            last_seen: wall,
            last_seen_at: now,
            arrived_at: now,
            held: 0,
            cut_off: false,
            injected: BTreeMap::new(),
        });
        if *sidecar.report != *report {
            let report: Arc<[u8]> = Arc::from(report);
            let old = std::mem::replace(&mut sidecar.report, report.clone());
            self.reports.remove(&old);
            self.reports.insert(report, id);
        }
        if sidecar.workload != identity.workload {
            sidecar.workload = identity.workload;
        }
        if sidecar.labels != identity.labels {
            sidecar.labels = identity.labels;
        }
        polled(sidecar, injected, &filter, revision, now, wall);
        Ok(id)
    }

    /// A poll arrived whose identity header `report` is the one a tracked sidecar sent last:
    /// updated as [`Table::arrive`] would, without parsing the header; `injected` is asked
    /// for the poll's counts only then. `None` when no tracked sidecar sent it (then parse
    /// it and call `arrive`).
    pub fn arrive_again(
        &mut self,
        report: &[u8],
        filter: &Filter,
        revision: Option<u64>,
        now: Instant,
        wall: SystemTime,
        injected: impl FnOnce(&Key) -> Option<BTreeMap<String, FaultCounts>>,
    ) -> Option<SidecarId> {
        let id = *self.reports.get(report)?;
        let sidecar = self.sidecars.get_mut(&id)?;
        let counts = injected(&sidecar.key);
        polled(sidecar, counts, filter, revision, now, wall);
        Some(id)
    }

    /// A poll of sidecar `id` ended at `now`, as `ended` says.
    pub fn leave(&mut self, id: SidecarId, now: Instant, wall: SystemTime, ended: Ended) {
        if let Some(sidecar) = self.sidecars.get_mut(&id) {
            sidecar.held = sidecar.held.saturating_sub(1);
            sidecar.last_seen = wall;
            sidecar.last_seen_at = now;
            sidecar.cut_off = ended == Ended::CutOff;
        }
    }

    /// Forgets the sidecars that are not live at `now`; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let before = self.sidecars.len();
        let ttl = self.ttl;
        let (order, reports) = (&mut self.order, &mut self.reports);
        self.sidecars.retain(|_, sidecar| {
            let live = is_live(sidecar, now, ttl);
            if !live {
                order.remove(&sidecar.key);
                reports.remove(&sidecar.report);
            }
            live
        });
        before - self.sidecars.len()
    }

    /// The live sidecars matching `query`, from after its `continue` token, at most its page
    /// size, with the token of the next page when more remain. A sidecar at `latest` (the
    /// replica's revision) or later is current; for the others `lag` says how a filter at a
    /// revision stands (asked once per distinct pair).
    pub fn page(
        &self,
        query: &SidecarsQuery,
        now: Instant,
        latest: Option<u64>,
        lag: impl FnMut(&Filter, Option<u64>) -> Lag,
    ) -> Result<(Vec<SidecarStatus>, Option<String>), RequestError> {
        let start = match query.continue_token.as_deref() {
            None => Bound::Unbounded,
            Some(token) => Bound::Excluded(Key::from_token(token).ok_or_else(|| {
                RequestError::Invalid(vec![boifi_policy::wire::FieldProblem::new(
                    "continue",
                    "not a token this broadcaster gave",
                )])
            })?),
        };
        let mut lags = Lags::new(latest, lag);
        let mut matching = self
            .order
            .range((start, Bound::Unbounded))
            .filter_map(|(key, id)| Some((key, self.sidecars.get(id)?)))
            .filter(|(key, sidecar)| self.is_live(sidecar, now) && wanted(query, key, sidecar));
        let mut page = Vec::new();
        let mut last = None;
        for (key, sidecar) in matching.by_ref().take(query.page_size()) {
            let (state, behind) = lags.state(sidecar, now);
            page.push(status(key, sidecar, state, behind));
            last = Some(key);
        }
        let more = matching.next().is_some();
        Ok((page, last.filter(|_| more).map(Key::token)))
    }

    /// The live sidecars by state at `now` (`latest` and `lag` as for [`Table::page`]).
    pub fn census(
        &self,
        now: Instant,
        latest: Option<u64>,
        lag: impl FnMut(&Filter, Option<u64>) -> Lag,
    ) -> Census {
        let mut lags = Lags::new(latest, lag);
        let mut census = Census::default();
        for sidecar in self.sidecars.values() {
            if !self.is_live(sidecar, now) {
                continue;
            }
            match lags.state(sidecar, now) {
                (SidecarState::Current, _) => census.current += 1,
                (SidecarState::Behind, lag) => {
                    census.behind += 1;
                    census.max_lag_seconds = census.max_lag_seconds.max(lag.as_secs_f64());
                }
            }
        }
        census
    }
}

/// What every poll of a sidecar updates.
fn polled(
    sidecar: &mut Sidecar,
    injected: Option<BTreeMap<String, FaultCounts>>,
    filter: &Filter,
    revision: Option<u64>,
    now: Instant,
    wall: SystemTime,
) {
    if sidecar.filter != *filter {
        sidecar.filter = filter.clone();
    }
    sidecar.revision = revision;
    sidecar.last_seen = wall;
    sidecar.last_seen_at = now;
    sidecar.arrived_at = now;
    sidecar.held = sidecar.held.saturating_add(1);
    sidecar.cut_off = false;
    for (policy, counts) in injected.into_iter().flatten() {
        merge(&mut sidecar.injected, policy, counts, now);
    }
}

/// Live: a poll of it is held, or its last one ended less than the TTL ago ([`CUT_OFF_TTL`]
/// when that poll was cut off).
fn is_live(sidecar: &Sidecar, now: Instant, ttl: Duration) -> bool {
    let ttl = if sidecar.cut_off {
        ttl.min(CUT_OFF_TTL)
    } else {
        ttl
    };
    sidecar.held > 0 || now.saturating_duration_since(sidecar.last_seen_at) < ttl
}

/// Keeps `counts` for `policy`; past [`MAX_POLICIES_PER_SIDECAR`] the policy reported
/// longest ago makes room (a deleted policy's counts stop changing, so it goes first).
fn merge(
    injected: &mut BTreeMap<String, (FaultCounts, Instant)>,
    policy: String,
    counts: FaultCounts,
    now: Instant,
) {
    if let Some(entry) = injected.get_mut(&policy) {
        *entry = (counts, now);
        return;
    }
    if injected.len() >= MAX_POLICIES_PER_SIDECAR {
        let oldest = injected
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(name, _)| name.clone());
        if let Some(oldest) = oldest {
            injected.remove(&oldest);
        }
    }
    injected.insert(policy, (counts, now));
}

/// Whether a sidecar is one `query` asks for. `service` is the workload name or the `app`
/// label, as in selectors (`boifi_policy::Selector::matches`).
fn wanted(query: &SidecarsQuery, key: &Key, sidecar: &Sidecar) -> bool {
    let app = sidecar.labels.as_ref().and_then(|labels| labels.get("app"));
    query
        .namespace
        .as_ref()
        .is_none_or(|namespace| *namespace == key.namespace)
        && query
            .service
            .as_ref()
            .is_none_or(|service| *service == sidecar.workload || app == Some(service))
}

fn status(key: &Key, sidecar: &Sidecar, state: SidecarState, behind: Duration) -> SidecarStatus {
    SidecarStatus {
        pod: key.pod.clone(),
        namespace: key.namespace.clone(),
        workload: sidecar.workload.clone(),
        labels: sidecar.labels.clone(),
        revision: sidecar.revision.unwrap_or(0),
        state,
        // Milliseconds are plenty; fewer digits on the wire.
        behind_seconds: (behind.as_millis() as f64) / 1000.0,
        first_seen: sidecar.first_seen,
        last_seen: sidecar.last_seen,
        polling: sidecar.held > 0,
        injected: sidecar
            .injected
            .iter()
            .map(|(policy, (counts, _))| (policy.clone(), *counts))
            .collect(),
    }
}

/// [`Lag`]s asked once per distinct filter and revision (the replicas of a workload share
/// both), and not at all for a sidecar at the replica's latest revision: in steady state every
/// sidecar is, since even a poll that nothing concerned ends with that revision.
struct Lags<'a, F> {
    latest: Option<u64>,
    lag: F,
    known: HashMap<(&'a Filter, Option<u64>), Lag>,
}

impl<'a, F: FnMut(&Filter, Option<u64>) -> Lag> Lags<'a, F> {
    fn new(latest: Option<u64>, lag: F) -> Self {
        Lags {
            latest,
            lag,
            known: HashMap::new(),
        }
    }

    /// The sidecar's state at `now`, and how long it has been behind.
    fn state(&mut self, sidecar: &'a Sidecar, now: Instant) -> (SidecarState, Duration) {
        if let (Some(revision), Some(latest)) = (sidecar.revision, self.latest) {
            if revision >= latest {
                return (SidecarState::Current, Duration::ZERO);
            }
        }
        let ask = &mut self.lag;
        let lag = *self
            .known
            .entry((&sidecar.filter, sidecar.revision))
            .or_insert_with(|| ask(&sidecar.filter, sidecar.revision));
        let since = match lag {
            Lag::Current => return (SidecarState::Current, Duration::ZERO),
            Lag::Behind { since } => since,
            // Asked from a revision this replica cannot vouch for: it is sent a snapshot at
            // once, so it is behind only since that poll arrived.
            Lag::Unknown => sidecar.arrived_at,
        };
        (SidecarState::Behind, now.saturating_duration_since(since))
    }
}

/// The sidecar gauges and counters.
struct SidecarMetrics {
    sidecars: IntGaugeVec,
    max_lag_seconds: Gauge,
    bad_reports: IntCounter,
    untracked: IntCounter,
}

impl SidecarMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let sidecars = IntGaugeVec::new(
            Opts::new(
                "boifi_broadcaster_sidecars",
                "Live sidecars polling this replica, by state (current: enforcing every change \
                 that concerns it; behind: not yet).",
            ),
            &["state"],
        )?;
        let max_lag_seconds = Gauge::new(
            "boifi_broadcaster_sidecar_max_lag_seconds",
            "The longest time a live sidecar of this replica has been behind a change that \
             concerns it; 0 when none is behind.",
        )?;
        let bad_reports = IntCounter::new(
            "boifi_broadcaster_bad_reports_total",
            "Sidecar report headers ignored because they were oversized or malformed (the \
             polls were served).",
        )?;
        let untracked = IntCounter::new(
            "boifi_broadcaster_sidecars_untracked_total",
            "Polls of sidecars left out of the sidecar table because it was full (the polls \
             were served).",
        )?;
        registry.register(Box::new(sidecars.clone()))?;
        registry.register(Box::new(max_lag_seconds.clone()))?;
        registry.register(Box::new(bad_reports.clone()))?;
        registry.register(Box::new(untracked.clone()))?;
        for state in [SidecarState::Current, SidecarState::Behind] {
            sidecars.with_label_values(&[state.name()]);
        }
        Ok(SidecarMetrics {
            sidecars,
            max_lag_seconds,
            bad_reports,
            untracked,
        })
    }
}

/// Warnings about bad reports: the first, then at most one per interval with the number left
/// unsaid.
#[derive(Debug, Default)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed since the last warning)` when a warning may go out at `now`.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < BAD_REPORT_LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The replica's table, shared by the poll handler, `/v1/sidecars` and the sweeper.
pub(crate) struct SidecarTable {
    table: Mutex<Table>,
    metrics: SidecarMetrics,
    bad_report_log: Mutex<LogLimit>,
    /// The `replica` of answers.
    replica: String,
}

impl SidecarTable {
    pub fn new(
        ttl: Duration,
        max: usize,
        replica: String,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(SidecarTable {
            table: Mutex::new(Table::new(ttl, max)),
            metrics: SidecarMetrics::new(registry)?,
            bad_report_log: Mutex::new(LogLimit::default()),
            replica,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update leaves the table consistent, so a panic elsewhere does not spoil it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hook of the stream handler: records a poll from its report headers. The guard
    /// notes the poll's end when dropped (answered, refused or cut off). Streams and polls
    /// without an identity are not tracked; bad headers are counted, logged and ignored (the
    /// poll is served all the same).
    pub fn poll_arrived(
        self: &Arc<Self>,
        headers: &HeaderMap,
        request: &StreamRequest,
    ) -> PollSeen {
        let StreamRequest::Poll {
            filter, revision, ..
        } = request
        else {
            return PollSeen::untracked();
        };
        let now = Instant::now();
        let Some(report) = headers.get(SIDECAR_HEADER).map(|value| value.as_bytes()) else {
            return PollSeen::untracked();
        };
        let mut injected = headers
            .get(INJECTED_HEADER)
            .map(|value| parse_injected(value.as_bytes()));
        let wall = SystemTime::now();
        // Every poll but a sidecar's first repeats its identity header: no parsing then.
        let again = self
            .lock()
            .arrive_again(report, filter, *revision, now, wall, |key| {
                self.usable(injected.take(), &key.namespace, &key.pod, now)
            });
        if let Some(id) = again {
            return self.seen(id);
        }
        let identity = match SidecarIdentity::parse_header(report) {
            Ok(identity) => identity,
            Err(e) => {
                self.bad_report(&e, None, now);
                return PollSeen::untracked();
            }
        };
        let poll = Poll {
            injected: self.usable(injected.take(), &identity.namespace, &identity.pod, now),
            identity,
            report: Cow::Borrowed(report),
            filter: Cow::Borrowed(filter),
            revision: *revision,
        };
        match self.lock().arrive(poll, now, wall) {
            Ok(id) => self.seen(id),
            Err(Full) => {
                self.metrics.untracked.inc();
                PollSeen::untracked()
            }
        }
    }

    fn seen(self: &Arc<Self>, id: SidecarId) -> PollSeen {
        PollSeen {
            table: Some((self.clone(), id)),
            ended: Ended::CutOff,
        }
    }

    /// The counts of a parsed `x-boifi-injected` header; a bad one is counted and logged,
    /// naming the sidecar.
    fn usable(
        &self,
        injected: Option<Result<BTreeMap<String, FaultCounts>, ReportError>>,
        namespace: &str,
        pod: &str,
        now: Instant,
    ) -> Option<BTreeMap<String, FaultCounts>> {
        injected?
            .map_err(|e| self.bad_report(&e, Some((namespace, pod)), now))
            .ok()
    }

    /// Counts a bad report header and warns (rate-limited); `from` is the sidecar's namespace
    /// and pod when known.
    fn bad_report(&self, error: &ReportError, from: Option<(&str, &str)>, now: Instant) {
        self.metrics.bad_reports.inc();
        let allowed = self
            .bad_report_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(now);
        if let Some(suppressed) = allowed {
            let from = from.map_or_else(String::new, |(namespace, pod)| {
                format!(
                    " from {}/{}",
                    namespace.escape_default(),
                    pod.escape_default()
                )
            });
            log::warn!(
                "ignored a sidecar report{from}: {error} (served the poll; {suppressed} more \
                 since the last warning)"
            );
        }
    }

    /// One page of the table (`GET /v1/sidecars`).
    pub fn page(&self, hub: &Hub, query: &SidecarsQuery) -> Result<SidecarsPage, RequestError> {
        let (revision, halted) = hub.position().ok_or(crate::hub::Refusal::NotReady)?;
        let now = Instant::now();
        let (sidecars, continue_token) =
            self.lock()
                .page(query, now, Some(revision), |filter, revision| {
                    hub.lag(filter, revision)
                })?;
        Ok(SidecarsPage {
            replica: self.replica.clone(),
            revision,
            halted,
            sidecars,
            continue_token,
        })
    }

    /// Forgets dead sidecars and refreshes the gauges.
    pub fn sweep(&self, hub: &Hub) {
        let now = Instant::now();
        let latest = hub.position().map(|(revision, _)| revision);
        let census = {
            let mut table = self.lock();
            let forgotten = table.sweep(now);
            if forgotten > 0 {
                log::debug!("forgot {forgotten} sidecars that stopped polling");
            }
            table.census(now, latest, |filter, revision| hub.lag(filter, revision))
        };
        let gauge = |state: SidecarState| self.metrics.sidecars.with_label_values(&[state.name()]);
        gauge(SidecarState::Current).set(i64::try_from(census.current).unwrap_or(i64::MAX));
        gauge(SidecarState::Behind).set(i64::try_from(census.behind).unwrap_or(i64::MAX));
        self.metrics.max_lag_seconds.set(census.max_lag_seconds);
    }
}

/// Held by a poll while it lasts; notes its end in the table when dropped: as answered once
/// [`PollSeen::answered`] was called, else as cut off (actix-web drops the handler of a
/// request whose connection closed).
pub(crate) struct PollSeen {
    table: Option<(Arc<SidecarTable>, SidecarId)>,
    ended: Ended,
}

impl PollSeen {
    fn untracked() -> PollSeen {
        PollSeen {
            table: None,
            ended: Ended::CutOff,
        }
    }

    /// The handler produced its response.
    pub fn answered(&mut self) {
        self.ended = Ended::Answered;
    }
}

impl Drop for PollSeen {
    fn drop(&mut self) {
        if let Some((table, id)) = self.table.take() {
            table
                .lock()
                .leave(id, Instant::now(), SystemTime::now(), self.ended);
        }
    }
}

/// Sweeps the table every [`SWEEP_INTERVAL`] until the broadcaster shuts down.
pub(crate) async fn sweep(table: Arc<SidecarTable>, hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown_signal();
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            _ = interval.tick() => table.sweep(&hub),
        }
    }
}

/// `GET /v1/sidecars`: this replica's table.
pub(crate) async fn sidecars(
    req: HttpRequest,
    hub: web::Data<Hub>,
    table: web::Data<SidecarTable>,
) -> Result<web::Json<SidecarsPage>, RequestError> {
    let query = SidecarsQuery::parse(req.query_string()).map_err(RequestError::Invalid)?;
    Ok(web::Json(table.page(&hub, &query)?))
}

#[cfg(test)]
mod tests;
