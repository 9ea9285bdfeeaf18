//! One VM's state, and what it does on each host event: configuration, tick, poll answer and
//! the callbacks of a request. Plain logic over a [`Host`]: the proxy-wasm contexts in `lib.rs`
//! only forward to it, and the tests drive it with a fake host and a fake clock.
//!
//! - Tick ([`Vm::on_tick`]): release the holds that are due, pick up a snapshot another VM
//!   shared, renew or take the lease and, when leading and due, send a poll; then re-arm the
//!   tick for the earliest of the next hold deadline and the poller's wake-up.
//! - Poll answer ([`Vm::on_poll_response`]): a snapshot is shared with the other VMs and
//!   applied, and the next poll goes out at once; a failure keeps the set and backs off.
//! - Reports ([`crate::report`]): every poll carries the sidecar's identity and the fault
//!   counts that changed since the last answered poll, read from Envoy's stats when the poll
//!   is sent; an answer acknowledges them.
//! - Request ([`Vm::on_request_headers`]): decide; an abort without delay is sent at once, a
//!   delay holds the request until the tick releases it (aborted or forwarded). A halted
//!   snapshot releases every held request at once.
//!
//! Every pause has its way out: a held request is resumed (or aborted) by the tick at its
//! deadline or by the kill switch, and forgotten when it ends first ([`Vm::on_request_done`]);
//! a poll in flight is answered, or abandoned at its deadline.

use std::rc::Rc;

use boifi_policy::wire::{FaultCounts, SidecarIdentity, INJECTED_HEADER, SIDECAR_HEADER};
use boifi_policy::{CompiledFault, CompiledPolicy, Workload};
use log::{debug, error, info, warn};
use proxy_wasm::types::Action;

use crate::config::{self, PluginConfig};
use crate::decide::{decide, Decision, FaultPlan, PolicySet, Sampler};
use crate::holds::{tick_period_ms, Holds};
use crate::host::Host;
use crate::identity::Resolved;
use crate::metrics::{self, FaultType, Kind, Registry};
use crate::poll::{self, FetchError, PollOutcome, Poller, Snapshot, MAX_BODY_BYTES};
use crate::report::{Reports, Tracked};
use crate::request::{HeaderSource, LazyRequest};
use crate::rng::{Rng, SplitMix64};
use crate::{applied, lease};

/// The header on every faulted response; its value is the policy name.
pub const FAULT_HEADER: &str = "x-boifi-fault";

const NS_PER_MS: u64 = 1_000_000;

/// A request held by a fault, as the tick needs it.
struct Held {
    plan: FaultPlan,
    /// The set the decision was made on (the current one may have changed since).
    set: Rc<PolicySet>,
    arrived_ns: u64,
}

/// What the VM keeps about one HTTP request (its context holds it).
#[derive(Debug)]
pub struct RequestState {
    id: u32,
    /// Policy name for `x-boifi-fault` on a response that was delayed but not aborted.
    tag: Option<String>,
    /// Deadline of this request's hold (its key in the holds), once it was held.
    held_until_ns: Option<u64>,
}

impl RequestState {
    /// The state of HTTP context `id`.
    pub fn new(id: u32) -> Self {
        RequestState {
            id,
            tag: None,
            held_until_ns: None,
        }
    }
}

/// One VM (one per Envoy worker thread, plus the main thread): its root context and every
/// request context share it (one thread, no locks).
pub struct Vm<H> {
    host: H,
    root_id: u32,
    /// This VM's name in the lease (random: context ids repeat across VMs).
    lease_id: u64,
    /// This plugin's shared-data keys (set on configure, from the plugin's name).
    keys: lease::Keys,
    /// False until a valid configuration arrives: the filter then passes everything.
    active: bool,
    config: Option<PluginConfig>,
    workload: Workload,
    /// The [`SIDECAR_HEADER`] of every poll; `None` when the identity cannot be sent.
    identity_header: Option<String>,
    /// Fault counts to report with the next polls.
    reports: Reports,
    poller: Option<Poller>,
    /// CAS of the shared snapshot mark last applied (or published) here.
    mark_cas: Option<u32>,
    /// The revision this VM last wrote into shared data ([`applied`]), and when.
    applied: Option<(u64, u64)>,
    /// Polling VM: since when its next poll waits for the other VMs to apply the revision it
    /// just got (see [`applied`]).
    holding_since_ms: Option<u64>,
    set: Rc<PolicySet>,
    rng: SplitMix64,
    holds: Holds<Held>,
    /// When the poller next needs a tick (due poll, or deadline of the poll in flight).
    poll_wake_ns: u64,
    /// When the armed tick fires; a hold with an earlier deadline re-arms it.
    armed_wake_ns: u64,
    metrics: Registry,
}

impl<H: Host> Vm<H> {
    /// The VM of root context `root_id`, not configured yet (it passes everything).
    pub fn new(host: H, root_id: u32) -> Self {
        let now = host.now_ns().unwrap_or(0);
        let mut rng = SplitMix64::seeded(now, root_id);
        Vm {
            lease_id: rng.next_u64(),
            keys: lease::Keys::default(),
            host,
            root_id,
            active: false,
            config: None,
            workload: Workload::default(),
            identity_header: None,
            reports: Reports::default(),
            poller: None,
            mark_cas: None,
            applied: None,
            holding_since_ms: None,
            set: Rc::new(PolicySet::default()),
            rng,
            holds: Holds::default(),
            poll_wake_ns: u64::MAX,
            armed_wake_ns: u64::MAX,
            metrics: Registry::default(),
        }
    }

    /// The policy set in use.
    pub fn policies(&self) -> &PolicySet {
        &self.set
    }

    /// Requests being held.
    pub fn held(&self) -> usize {
        self.holds.len()
    }

    /// The poll client, once configured.
    pub fn poller(&self) -> Option<&Poller> {
        self.poller.as_ref()
    }

    /// Applies the plugin configuration; `identity` reads the workload from node metadata.
    /// A bad configuration is logged and leaves the VM passing everything (fail open). Always
    /// true: refusing the configuration could keep Envoy from serving the listener at all.
    pub fn configure(&mut self, bytes: Option<&[u8]>, identity: impl FnOnce() -> Resolved) -> bool {
        let parsed = match config::parse(bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                error!("invalid plugin configuration, injecting no faults: {e}");
                self.active = false;
                self.count(metrics::FAIL_OPEN, 1);
                return true;
            }
        };
        for field in &parsed.unknown_fields {
            warn!("plugin configuration: unknown field {field:?} ignored");
        }
        self.keys = lease::Keys::for_plugin(self.host.plugin_name().as_deref());
        let resolved = identity();
        for problem in &resolved.problems {
            warn!("workload identity: {problem}");
        }
        self.identity_header = self.identity_header(&resolved);
        self.workload = resolved.workload;
        info!(
            "workload {}/{}; policies from cluster {}",
            self.workload.namespace, self.workload.name, parsed.config.broadcaster_cluster
        );
        let now_ns = self.host.now_ns().unwrap_or(0);
        self.poller = Some(Poller::new(
            &parsed.config,
            now_ns / NS_PER_MS,
            &self.workload,
            resolved.labels_known,
        ));
        self.config = Some(parsed.config);
        self.active = true;
        self.gauge(metrics::CONFIG_REVISION, 0);
        self.poll_wake_ns = now_ns;
        self.rearm(now_ns);
        true
    }

    /// The [`SIDECAR_HEADER`] value for this sidecar; labels that do not fit are left out, and
    /// that is logged and shown in a gauge.
    fn identity_header(&mut self, resolved: &Resolved) -> Option<String> {
        let identity = SidecarIdentity {
            pod: resolved.pod.clone(),
            namespace: resolved.workload.namespace.clone(),
            workload: resolved.workload.name.clone(),
            labels: resolved
                .labels_known
                .then(|| resolved.workload.labels.clone()),
        };
        match identity.header_value() {
            Ok(header) => {
                if header.labels_dropped {
                    warn!("sidecar reports leave the labels out: too many or too long");
                }
                self.gauge(
                    metrics::REPORT_LABELS_DROPPED,
                    u64::from(header.labels_dropped),
                );
                Some(header.value)
            }
            Err(e) => {
                warn!("sidecar reports disabled: {e}");
                None
            }
        }
    }

    /// The root context's tick.
    pub fn on_tick(&mut self) {
        let Some(now_ns) = self.host.now_ns() else {
            return;
        };
        self.serve_tick(now_ns);
    }

    /// The answer to a call this VM dispatched (`token`), with a body of `body_size` bytes.
    pub fn on_poll_response(&mut self, token: u32, body_size: usize) {
        let Some(poller) = self.poller.as_mut() else {
            return;
        };
        if !poller.owns(token) {
            debug!("late answer to an abandoned poll ignored");
            return;
        }
        let now_ns = self.host.now_ns().unwrap_or(0);
        let now_ms = now_ns / NS_PER_MS;
        let status = self.host.http_call_response_status();
        let body = if body_size == 0 || body_size > MAX_BODY_BYTES {
            Vec::new()
        } else {
            self.host
                .http_call_response_body(body_size)
                .unwrap_or_default()
        };
        let outcome = if body_size > MAX_BODY_BYTES {
            poller.failed(now_ms, &mut self.rng);
            Err(FetchError::TooLarge(body_size))
        } else {
            poller.on_response(now_ms, status.as_deref(), &body, &mut self.rng)
        };
        // An answered poll delivered its report (the broadcaster reads it on arrival).
        if outcome.is_ok() {
            self.reports.answered();
        } else {
            self.reports.failed();
        }
        self.poll_wake_ns = poller.wake_at_ms().saturating_mul(NS_PER_MS);
        match outcome {
            Err(e) => {
                warn!(
                    "policy poll failed: {e}; keeping revision {}; retry in {} ms",
                    self.set.revision(),
                    (self.poll_wake_ns / NS_PER_MS).saturating_sub(now_ms)
                );
                self.count(metrics::CONFIG_FETCH_FAILURES, 1);
            }
            Ok(PollOutcome::Snapshot(snapshot)) => {
                self.publish(&body);
                if snapshot.revision != self.set.revision() {
                    self.holding_since_ms = Some(now_ms);
                }
                self.apply_snapshot(snapshot);
            }
            Ok(PollOutcome::Unchanged) => {}
        }
        // A snapshot is followed by the next poll at once, not at the next tick.
        self.serve_tick(now_ns);
    }

    /// Request headers arrived: pass, abort at once, or hold (delay).
    pub fn on_request_headers(
        &mut self,
        request: &mut RequestState,
        headers: impl HeaderSource,
    ) -> Action {
        // Not configured: fail open.
        if !self.active {
            return Action::Continue;
        }
        let set = Rc::clone(&self.set);
        // Nothing can apply: read nothing, the common case must stay cheap.
        if set.halted() || set.policies().is_empty() {
            return Action::Continue;
        }
        let Some(now_ns) = self.host.now_ns() else {
            self.count(metrics::FAIL_OPEN, 1);
            return Action::Continue;
        };
        // Headers are fetched one by one as rules ask for them, not as a whole map.
        let lazy = LazyRequest::new(headers, set.header_names());
        let mut sampler = Sampler::new(&mut self.rng);
        let decision = decide(&lazy, &set, now_ns / NS_PER_MS, &mut sampler);
        if sampler.missing_request_id() {
            self.count(metrics::NO_REQUEST_ID, 1);
        }
        // A rule saw a value the host failed to give: the decision may be wrong, pass.
        if lazy.failed() {
            self.count(metrics::FAIL_OPEN, 1);
            return Action::Continue;
        }
        let Decision::Fault(plan) = decision else {
            return Action::Continue;
        };
        let Some(policy) = set.policy(&plan) else {
            return Action::Continue;
        };
        // Full: past the cap (the policy's own, or the sidecar's) the request passes unfaulted,
        // as past Envoy's max_active_faults, so a flood cannot hold unbounded requests.
        let cap = policy.max_held_requests().map_or(
            self.config
                .as_ref()
                .map_or(config::DEFAULT_MAX_HELD_REQUESTS, |c| c.max_held_requests),
            u64::from,
        );
        if plan.hold_ms() > 0 && self.holds.len() as u64 >= cap {
            self.count(metrics::HELD_OVERFLOW, 1);
            return Action::Continue;
        }
        let name = policy.name();
        if plan.delay_ms.is_some() {
            self.count(&metrics::faults_injected(name, FaultType::Delay), 1);
        }
        if plan.abort {
            self.count(&metrics::faults_injected(name, FaultType::Abort), 1);
        } else {
            request.tag = Some(name.to_owned());
        }
        if plan.hold_ms() == 0 {
            if plan.abort && !send_abort(&self.host, &set, &plan) {
                self.count(metrics::FAIL_OPEN, 1);
                return Action::Continue;
            }
            // After a local reply the filter must stop; a zero delay just goes on.
            return if plan.abort {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        let deadline_ns = now_ns.saturating_add(plan.hold_ms().saturating_mul(NS_PER_MS));
        self.holds.insert(
            request.id,
            deadline_ns,
            Held {
                plan,
                set: Rc::clone(&set),
                arrived_ns: now_ns,
            },
        );
        self.held_changed(1);
        request.held_until_ns = Some(deadline_ns);
        if deadline_ns < self.armed_wake_ns {
            self.rearm(now_ns);
        }
        // Resumed (or aborted) by the tick at the deadline; dropped if the request ends.
        Action::Pause
    }

    /// Request body or trailers: while held, Continue would let Envoy forward the headers early.
    pub fn on_request_data(&self, request: &RequestState) -> Action {
        if self.is_held(request) {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// Response headers: a delayed (not aborted) response is tagged with its policy.
    pub fn on_response_headers(&mut self, request: &RequestState) -> Action {
        if let Some(policy) = &request.tag {
            if !self.host.set_response_header(FAULT_HEADER, policy) {
                self.count(metrics::FAIL_OPEN, 1);
            }
        }
        Action::Continue
    }

    /// The request ended: a request that went away while held must not be resumed later.
    pub fn on_request_done(&mut self, request: &RequestState) {
        if let Some(deadline) = request.held_until_ns {
            if self.holds.remove(request.id, deadline).is_some() {
                self.held_changed(-1);
            }
        }
    }

    fn is_held(&self, request: &RequestState) -> bool {
        request
            .held_until_ns
            .is_some_and(|deadline| self.holds.contains(request.id, deadline))
    }

    /// Releases due holds, then sends a poll if one is due, then re-arms the tick.
    fn serve_tick(&mut self, now_ns: u64) {
        let due = self.holds.take_due(now_ns);
        self.held_changed(-(due.len() as i64));
        self.release(due, now_ns);
        self.poll_if_due(now_ns);
        self.rearm(now_ns);
    }

    fn poll_if_due(&mut self, now_ns: u64) {
        if self.poller.is_none() {
            return;
        }
        let now_ms = now_ns / NS_PER_MS;
        self.follow();
        self.record_applied(now_ms);
        let leads = lease::lead(&self.host, &self.keys, self.lease_id, now_ms);
        let (Some(poller), Some(config)) = (self.poller.as_mut(), self.config.as_ref()) else {
            return;
        };
        let sync_ns = (now_ms + lease::SYNC_MS).saturating_mul(NS_PER_MS);
        if !leads {
            self.poll_wake_ns = sync_ns;
            return;
        }
        let mut failures = 0;
        if let Some(err) = poller.abandon_if_stuck(now_ms, &mut self.rng) {
            self.reports.failed();
            warn!(
                "policy poll failed: {err}; keeping revision {}",
                self.set.revision()
            );
            failures += 1;
        }
        let due = poller.is_due(now_ms);
        let holding = due
            && holds_for_others(
                &self.host,
                &self.keys,
                &mut self.holding_since_ms,
                self.set.revision(),
                now_ms,
            );
        if holding {
            self.poll_wake_ns = (now_ms + applied::HOLD_CHECK_MS).saturating_mul(NS_PER_MS);
        } else if due {
            let request = poller.request();
            let injected =
                injected_header(&mut self.reports, &mut self.metrics, &self.host, now_ms);
            let headers: Vec<(&str, &str)> = [
                self.identity_header.as_deref().map(|v| (SIDECAR_HEADER, v)),
                injected.as_deref().map(|v| (INJECTED_HEADER, v)),
            ]
            .into_iter()
            .flatten()
            .collect();
            // Calls dispatched under another context's id are answered to that context.
            self.host.set_effective_context(self.root_id);
            match self.host.dispatch_get(
                &config.broadcaster_cluster,
                &config.broadcaster_authority,
                &request.path,
                &headers,
                request.timeout_ms,
            ) {
                Ok(token) => poller.sent(token, now_ms),
                Err(status) => {
                    self.reports.failed();
                    let wait = poller.failed(now_ms, &mut self.rng);
                    warn!(
                        "cannot poll cluster {:?}: {status}; retry in {wait} ms",
                        config.broadcaster_cluster
                    );
                    failures += 1;
                }
            }
        }
        if !holding {
            self.poll_wake_ns = poller.wake_at_ms().saturating_mul(NS_PER_MS).min(sync_ns);
        }
        if failures > 0 {
            self.count(metrics::CONFIG_FETCH_FAILURES, failures);
        }
    }

    /// Writes the revision this VM applies into shared data when it changed, and every
    /// [`applied::HEARTBEAT_MS`] to stay counted.
    fn record_applied(&mut self, now_ms: u64) {
        let revision = self.set.revision();
        let due = match self.applied {
            Some((recorded, at_ms)) => {
                recorded != revision || now_ms.saturating_sub(at_ms) >= applied::HEARTBEAT_MS
            }
            None => true,
        };
        if due && applied::record(&self.host, &self.keys, self.lease_id, revision, now_ms) {
            self.applied = Some((revision, now_ms));
        }
    }

    /// Applies a snapshot that another VM shared since this one last looked.
    fn follow(&mut self) {
        let Some(data) = lease::follow(&self.host, &self.keys, &mut self.mark_cas) else {
            return;
        };
        match poll::parse_snapshot(data) {
            Ok(snapshot) => {
                if let Some(poller) = self.poller.as_mut() {
                    poller.adopt(snapshot.revision);
                }
                self.apply_snapshot(snapshot);
            }
            Err(e) => warn!("shared policy snapshot unusable: {e}"),
        }
    }

    /// Hands a snapshot this VM fetched (the complete poll body) to the other VMs.
    fn publish(&mut self, body: &[u8]) {
        let Some(data) = std::str::from_utf8(body).ok().and_then(poll::snapshot_data) else {
            return;
        };
        lease::publish(&self.host, &self.keys, &data, &mut self.mark_cas);
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let mut compiled = Vec::with_capacity(snapshot.policies.len());
        let mut rejected = 0;
        for policy in snapshot.policies {
            match policy {
                Ok(p) => compiled.push(p),
                Err(e) => {
                    rejected += 1;
                    warn!("policy {} skipped: {}", e.policy, e.message);
                }
            }
        }
        let set = PolicySet::new(snapshot.revision, snapshot.halted, compiled, &self.workload);
        info!(
            "policies at revision {}: {} for this workload{}",
            set.revision(),
            set.policies().len(),
            if set.halted() { ", halted" } else { "" }
        );
        let halted = set.halted();
        let now_ms = self.host.now_ns().unwrap_or(0) / NS_PER_MS;
        self.reports.track(
            set.policies().iter().map(|p| (p.name(), fault_types(p))),
            now_ms,
        );
        self.gauge(metrics::CONFIG_REVISION, set.revision());
        self.gauge(metrics::POLICIES_ACTIVE, set.policies().len() as u64);
        self.gauge(metrics::HALTED, u64::from(halted));
        self.count(metrics::CONFIG_UPDATES, 1);
        if rejected > 0 {
            self.count(metrics::POLICIES_REJECTED, rejected);
        }
        self.set = Rc::new(set);
        if halted {
            // The kill switch ends every fault now, including requests being delayed.
            let all = self.holds.take_all();
            self.held_changed(-(all.len() as i64));
            let now = self.host.now_ns().unwrap_or(0);
            self.release(all, now);
        }
    }

    /// Ends the holds in `due`: an abort is sent (unless halted meanwhile), else the request
    /// goes on.
    fn release(&mut self, due: Vec<(u32, Held)>, now_ns: u64) {
        if due.is_empty() {
            return;
        }
        for (context_id, held) in due {
            let halted = self.set.halted();
            let held_ms = now_ns.saturating_sub(held.arrived_ns) / NS_PER_MS;
            if let Some(policy) = held.set.policy(&held.plan) {
                self.histogram(&metrics::fault_delay_ms(policy.name()), held_ms);
            }
            if !self.host.set_effective_context(context_id) {
                // The request went away meanwhile.
                continue;
            }
            let done = if held.plan.abort && !halted {
                send_abort(&self.host, &held.set, &held.plan)
            } else {
                self.host.resume_http_request()
            };
            if !done {
                self.count(metrics::FAIL_OPEN, 1);
                // Best effort: a request that cannot be aborted should at least go on.
                self.host.resume_http_request();
            }
        }
        self.host.set_effective_context(self.root_id);
    }

    /// Arms the root's tick for the earliest of the next hold deadline and the poller's wake.
    fn rearm(&mut self, now_ns: u64) {
        let wake = self
            .holds
            .next_deadline_ns()
            .map_or(self.poll_wake_ns, |d| d.min(self.poll_wake_ns));
        let period = tick_period_ms(now_ns, wake);
        if self.host.set_tick_period_ms(period) {
            self.armed_wake_ns = now_ns.saturating_add(period * NS_PER_MS);
        } else {
            error!("could not arm the timer; held requests wait for the next tick");
        }
    }

    /// The id of stat `name`, defined on first use.
    fn metric(&mut self, kind: Kind, name: &str) -> Option<u32> {
        let host = &self.host;
        self.metrics
            .id(kind, name, |kind, name| host.define_metric(kind, name))
    }

    /// Moves the sidecar-wide gauge of held requests by `by` (every VM adds its own).
    fn held_changed(&mut self, by: i64) {
        if by != 0 {
            if let Some(id) = self.metric(Kind::Gauge, metrics::HELD_REQUESTS) {
                self.host.increment_metric(id, by);
            }
        }
    }

    fn count(&mut self, name: &str, by: i64) {
        if let Some(id) = self.metric(Kind::Counter, name) {
            self.host.increment_metric(id, by);
        }
    }

    fn gauge(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metric(Kind::Gauge, name) {
            self.host.record_metric(id, value);
        }
    }

    fn histogram(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metric(Kind::Histogram, name) {
            self.host.record_metric(id, value);
        }
    }
}

/// Whether the polling VM keeps holding its next poll: it got a new revision at `since` and some
/// VM of this Envoy has not applied it yet, for at most [`applied::MAX_HOLD_MS`]. Clears `since`
/// once it stops holding.
fn holds_for_others(
    host: &impl Host,
    keys: &lease::Keys,
    since: &mut Option<u64>,
    revision: u64,
    now_ms: u64,
) -> bool {
    let Some(started) = *since else {
        return false;
    };
    let behind = applied::behind(host, keys, revision, now_ms);
    if behind == 0 {
        *since = None;
        return false;
    }
    if now_ms.saturating_sub(started) >= applied::MAX_HOLD_MS {
        warn!(
            "{behind} VM(s) of this Envoy did not apply revision {revision} within {} ms; polling anyway",
            applied::MAX_HOLD_MS
        );
        *since = None;
        return false;
    }
    true
}

/// The [`INJECTED_HEADER`] for the next poll: the tracked policies' fault counters, read back
/// from Envoy (every VM's increments), defined here on first use.
fn injected_header(
    reports: &mut Reports,
    registry: &mut Registry,
    host: &impl Host,
    now_ms: u64,
) -> Option<String> {
    reports.header(now_ms, |tracked: &mut Tracked| {
        let mut counts = [0; 2];
        for (i, fault_type) in [FaultType::Abort, FaultType::Delay].into_iter().enumerate() {
            if !tracked.types[i] {
                continue;
            }
            let id = match tracked.ids[i] {
                Some(id) => id,
                None => {
                    let name = metrics::faults_injected(&tracked.policy, fault_type);
                    let id = registry.id(Kind::Counter, &name, |kind, name| {
                        host.define_metric(kind, name)
                    })?;
                    *tracked.ids.get_mut(i)? = Some(id);
                    id
                }
            };
            counts[i] = host.metric_value(id)?;
        }
        Some(FaultCounts {
            abort: counts[0],
            delay: counts[1],
        })
    })
}

/// Whether any rule of `policy` aborts, and whether any delays: the counters it can move.
fn fault_types(policy: &CompiledPolicy) -> [bool; 2] {
    let any = |has: fn(&CompiledFault) -> bool| policy.rules().iter().any(|r| has(r.fault()));
    [any(|f| f.abort().is_some()), any(|f| f.delay().is_some())]
}

/// Sends the plan's abort as a local reply on the effective context.
fn send_abort(host: &impl Host, set: &PolicySet, plan: &FaultPlan) -> bool {
    let (Some(policy), Some(abort)) = (set.policy(plan), set.abort(plan)) else {
        return false;
    };
    let mut headers: Vec<(&str, &str)> = abort
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(|(n, _)| *n != FAULT_HEADER)
        .collect();
    headers.push((FAULT_HEADER, policy.name()));
    // gRPC clients expect a trailers-only 200 with grpc-status, whatever proxy sits between;
    // an HTTP status would read as a protocol error (and older Envoys mangle it). An abort
    // with only httpStatus sends gRPC's mapping of it (503 -> UNAVAILABLE).
    if host.is_grpc_request() {
        return host.send_grpc_response(abort.grpc_status(), abort.body(), headers);
    }
    host.send_http_response(abort.status(), headers, abort.body().map(str::as_bytes))
}

#[cfg(test)]
mod tests;
