//! BOIFI's proxy-wasm HTTP filter: injects the aborts and delays that policies declare, for the
//! workloads they select, inside each Envoy sidecar.
//!
//! Pure, natively tested logic:
//! - [`config`]: the plugin configuration (JSON), checked, with defaults.
//! - [`identity`]: the workload from Envoy node metadata.
//! - [`decide`]: the per-request decision over a [`decide::PolicySet`].
//! - [`request`]: the request as rules read it, fetched from Envoy only as far as they get.
//! - [`sync`]: the long-poll client for the sse-broadcaster, with backoff and jitter.
//! - [`share`]: one poll per Envoy: the lease that elects the polling VM.
//! - [`holds`]: requests held by delays, by deadline.
//! - [`metrics`]: stat names; [`rng`]: the per-VM random source.
//!
//! Thin host glue: `host` (every host call, none unwrapping) and the root and HTTP contexts
//! below. Everything fails open: a bad configuration, an unreachable broadcaster or a failed
//! host call lets traffic through untouched.
//!
//! One VM, hence one root context, runs per Envoy worker thread (plus one on the main thread),
//! each with its own state. Only the VM holding the lease polls the broadcaster; it publishes
//! each snapshot in shared data, where the others pick it up on their tick.

#![forbid(unsafe_code)]

pub mod config;
pub mod decide;
#[cfg(test)]
mod garbage;
pub mod holds;
mod host;
pub mod identity;
pub mod metrics;
pub mod request;
pub mod rng;
pub mod share;
pub mod sync;

use std::cell::RefCell;
use std::rc::Rc;

use boifi_policy::Workload;
use log::{debug, error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::config::PluginConfig;
use crate::decide::{decide, Decision, FaultPlan, PolicySet, Sampler};
use crate::holds::{tick_period_ms, Holds};
use crate::metrics::{FaultType, Kind, Registry};
use crate::request::LazyRequest;
use crate::rng::{Rng, SplitMix64};
use crate::sync::{PollOutcome, Poller, MAX_BODY_BYTES};

/// The header on every faulted response; its value is the policy name.
pub const FAULT_HEADER: &str = "x-boifi-fault";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

const NS_PER_MS: u64 = 1_000_000;

type DefineMetric = fn(Kind, &str) -> Option<u32>;

/// A request held by a fault, as the root's tick needs it.
struct Held {
    plan: FaultPlan,
    /// The set the decision was made on (the current one may have changed since).
    set: Rc<PolicySet>,
    arrived_ns: u64,
}

/// State of one VM, shared by its root context and its HTTP contexts (one thread, no locks).
struct Vm {
    root_id: u32,
    /// False until a valid configuration arrives: the filter then passes everything.
    active: bool,
    set: Rc<PolicySet>,
    rng: SplitMix64,
    holds: Holds<Held>,
    /// The configured cap on `holds` (`max_held_requests`).
    max_held: u64,
    /// When the poller next needs a tick (due poll, or deadline of the poll in flight).
    poll_wake_ns: u64,
    /// When the armed tick fires; a hold with an earlier deadline re-arms it.
    armed_wake_ns: u64,
    metrics: Registry<DefineMetric>,
}

impl Vm {
    fn count(&mut self, name: &str, by: i64) {
        if let Some(id) = self.metrics.id(Kind::Counter, name) {
            host::increment_metric(id, by);
        }
    }

    /// Moves the sidecar-wide gauge of held requests by `by` (every VM adds its own).
    fn held_changed(&mut self, by: i64) {
        if by != 0 {
            if let Some(id) = self.metrics.id(Kind::Gauge, metrics::HELD_REQUESTS) {
                host::increment_metric(id, by);
            }
        }
    }

    fn gauge(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metrics.id(Kind::Gauge, name) {
            host::record_metric(id, value);
        }
    }

    fn histogram(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metrics.id(Kind::Histogram, name) {
            host::record_metric(id, value);
        }
    }

    /// Arms the root's tick for the earliest of the next hold deadline and the poller's wake.
    fn rearm(&mut self, now_ns: u64) {
        let wake = self
            .holds
            .next_deadline_ns()
            .map_or(self.poll_wake_ns, |d| d.min(self.poll_wake_ns));
        let period = tick_period_ms(now_ns, wake);
        if host::set_tick_period_ms(period) {
            self.armed_wake_ns = now_ns.saturating_add(period * NS_PER_MS);
        } else {
            error!("could not arm the timer; held requests wait for the next tick");
        }
    }
}

struct Root {
    vm: Rc<RefCell<Vm>>,
    config: Option<PluginConfig>,
    workload: Workload,
    poller: Option<Poller>,
    /// This VM's name in the lease (random: context ids repeat across VMs).
    lease_id: u64,
    /// CAS of the shared snapshot mark last applied (or published) here.
    mark_cas: Option<u32>,
}

impl Root {
    fn new(context_id: u32) -> Self {
        let now = host::now_ns().unwrap_or(0);
        let mut rng = SplitMix64::seeded(now, context_id);
        Root {
            lease_id: rng.next_u64(),
            mark_cas: None,
            vm: Rc::new(RefCell::new(Vm {
                root_id: context_id,
                active: false,
                set: Rc::new(PolicySet::default()),
                rng,
                holds: Holds::default(),
                max_held: crate::config::DEFAULT_MAX_HELD_REQUESTS,
                poll_wake_ns: u64::MAX,
                armed_wake_ns: u64::MAX,
                metrics: Registry::new(host::define_metric as DefineMetric),
            })),
            config: None,
            workload: Workload::default(),
            poller: None,
        }
    }

    /// Releases due holds, then sends a poll if one is due.
    fn serve_tick(&mut self, now_ns: u64) {
        let due = {
            let mut vm = self.vm.borrow_mut();
            let due = vm.holds.take_due(now_ns);
            vm.held_changed(-(due.len() as i64));
            due
        };
        release(&self.vm, due, now_ns);
        self.poll_if_due(now_ns);
        let mut vm = self.vm.borrow_mut();
        vm.rearm(now_ns);
    }

    fn poll_if_due(&mut self, now_ns: u64) {
        if self.poller.is_none() {
            return;
        }
        let now_ms = now_ns / NS_PER_MS;
        self.follow();
        let leads = self.lead(now_ms);
        let (Some(poller), Some(config)) = (self.poller.as_mut(), self.config.as_ref()) else {
            return;
        };
        let mut vm = self.vm.borrow_mut();
        let sync_ns = (now_ms + share::SYNC_MS).saturating_mul(NS_PER_MS);
        if !leads {
            vm.poll_wake_ns = sync_ns;
            return;
        }
        if let Some(err) = poller.abandon_if_stuck(now_ms, &mut vm.rng) {
            warn!(
                "policy poll failed: {err}; keeping revision {}",
                vm.set.revision()
            );
            vm.count(metrics::CONFIG_FETCH_FAILURES, 1);
        }
        if poller.is_due(now_ms) {
            let request = poller.request();
            // Calls dispatched under another context's id are answered to that context.
            host::set_effective_context(vm.root_id);
            match host::dispatch_get(
                &config.broadcaster_cluster,
                &config.broadcaster_authority,
                &request.path,
                request.timeout_ms,
            ) {
                Ok(token) => poller.sent(token, now_ms),
                Err(status) => {
                    let wait = poller.failed(now_ms, &mut vm.rng);
                    warn!(
                        "cannot poll cluster {:?}: {status}; retry in {wait} ms",
                        config.broadcaster_cluster
                    );
                    vm.count(metrics::CONFIG_FETCH_FAILURES, 1);
                }
            }
        }
        vm.poll_wake_ns = poller.wake_at_ms().saturating_mul(NS_PER_MS).min(sync_ns);
    }

    /// Whether this VM holds (renewed, or just took) the lease to poll for the whole Envoy.
    fn lead(&self, now_ms: u64) -> bool {
        let (lease, cas) = host::shared_data(share::LEASE_KEY);
        let Some(lease) = share::claim(lease.as_deref(), self.lease_id, now_ms) else {
            return false;
        };
        if !host::set_shared_data(share::LEASE_KEY, lease.as_bytes(), cas) {
            return false;
        }
        // A first lease is written without CAS, so several VMs may write it: the last one wins.
        cas.is_some()
            || host::shared_data(share::LEASE_KEY)
                .0
                .as_deref()
                .and_then(share::holder)
                .is_some_and(|(id, _)| id == self.lease_id)
    }

    /// Applies a snapshot that another VM published since this one last looked.
    fn follow(&mut self) {
        let (_, mark) = host::shared_data(share::MARK_KEY);
        if mark.is_none() || mark == self.mark_cas {
            return;
        }
        self.mark_cas = mark;
        let Some(data) = host::shared_data(share::SNAPSHOT_KEY)
            .0
            .and_then(|d| String::from_utf8(d).ok())
        else {
            return;
        };
        match sync::parse_snapshot(data) {
            Ok(snapshot) => {
                if let Some(poller) = self.poller.as_mut() {
                    poller.adopt(snapshot.revision);
                }
                self.apply_snapshot(snapshot);
            }
            Err(e) => warn!("shared policy snapshot unusable: {e}"),
        }
    }

    /// Hands a snapshot this VM fetched to the other VMs.
    fn publish(&mut self, body: &[u8]) {
        let Some(data) = std::str::from_utf8(body)
            .ok()
            .and_then(sync::last_snapshot_data)
        else {
            return;
        };
        if host::set_shared_data(share::SNAPSHOT_KEY, data.as_bytes(), None)
            && host::set_shared_data(share::MARK_KEY, b"1", None)
        {
            self.mark_cas = host::shared_data(share::MARK_KEY).1;
        }
    }

    fn apply_snapshot(&mut self, snapshot: sync::Snapshot) {
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
        let mut vm = self.vm.borrow_mut();
        vm.gauge(metrics::CONFIG_REVISION, set.revision());
        vm.gauge(metrics::POLICIES_ACTIVE, set.policies().len() as u64);
        vm.gauge(metrics::HALTED, u64::from(halted));
        vm.count(metrics::CONFIG_UPDATES, 1);
        if rejected > 0 {
            vm.count(metrics::POLICIES_REJECTED, rejected);
        }
        vm.set = Rc::new(set);
        if halted {
            // The kill switch ends every fault now, including requests being delayed.
            let all = vm.holds.take_all();
            vm.held_changed(-(all.len() as i64));
            drop(vm);
            let now = host::now_ns().unwrap_or(0);
            release(&self.vm, all, now);
        }
    }
}

/// Ends the holds in `due`: an abort is sent (unless halted meanwhile), else the request goes on.
fn release(vm: &Rc<RefCell<Vm>>, due: Vec<(u32, Held)>, now_ns: u64) {
    if due.is_empty() {
        return;
    }
    let root_id = vm.borrow().root_id;
    for (context_id, held) in due {
        let halted = vm.borrow().set.halted();
        let held_ms = now_ns.saturating_sub(held.arrived_ns) / NS_PER_MS;
        if let Some(policy) = held.set.policy(&held.plan) {
            vm.borrow_mut()
                .histogram(&metrics::fault_delay_ms(policy.name()), held_ms);
        }
        if !host::set_effective_context(context_id) {
            // The request went away meanwhile.
            continue;
        }
        let done = if held.plan.abort && !halted {
            send_abort(&held.set, &held.plan)
        } else {
            host::resume_http_request()
        };
        if !done {
            vm.borrow_mut().count(metrics::FAIL_OPEN, 1);
            // Best effort: a request that cannot be aborted should at least go on.
            host::resume_http_request();
        }
    }
    host::set_effective_context(root_id);
}

/// Sends the plan's abort as a local reply on the effective context.
fn send_abort(set: &PolicySet, plan: &FaultPlan) -> bool {
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
    if host::is_grpc_request() {
        return host::send_grpc_response(abort.grpc_status(), abort.body(), headers);
    }
    host::send_http_response(abort.status(), headers, abort.body().map(str::as_bytes))
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(poller) = self.poller.as_mut() else {
            return;
        };
        if !poller.owns(token_id) {
            debug!("late answer to an abandoned poll ignored");
            return;
        }
        let now_ns = host::now_ns().unwrap_or(0);
        let status = host::http_call_response_status();
        let body = if body_size == 0 || body_size > MAX_BODY_BYTES {
            Vec::new()
        } else {
            host::http_call_response_body(body_size).unwrap_or_default()
        };
        let outcome = {
            let mut vm = self.vm.borrow_mut();
            let outcome = if body_size > MAX_BODY_BYTES {
                poller.failed(now_ns / NS_PER_MS, &mut vm.rng);
                Err(sync::FetchError::TooLarge(body_size))
            } else {
                poller.on_response(now_ns / NS_PER_MS, status.as_deref(), &body, &mut vm.rng)
            };
            vm.poll_wake_ns = poller.wake_at_ms().saturating_mul(NS_PER_MS);
            if let Err(e) = &outcome {
                warn!(
                    "policy poll failed: {e}; keeping revision {}; retry in {} ms",
                    vm.set.revision(),
                    (vm.poll_wake_ns / NS_PER_MS).saturating_sub(now_ns / NS_PER_MS)
                );
                vm.count(metrics::CONFIG_FETCH_FAILURES, 1);
            }
            outcome
        };
        if let Ok(PollOutcome::Snapshot(snapshot)) = outcome {
            self.publish(&body);
            self.apply_snapshot(snapshot);
        }
        // A snapshot is followed by the next poll at once, not at the next tick.
        self.serve_tick(now_ns);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        if let Some(level) = host::log_level() {
            proxy_wasm::set_log_level(level);
        }
        let bytes = host::plugin_configuration(plugin_configuration_size);
        let parsed = match config::parse(bytes.as_deref()) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Fail open: stay loaded, inject nothing. Refusing the configuration could
                // keep Envoy from serving the listener at all.
                error!("invalid plugin configuration, injecting no faults: {e}");
                let mut vm = self.vm.borrow_mut();
                vm.active = false;
                vm.count(metrics::FAIL_OPEN, 1);
                return true;
            }
        };
        for field in &parsed.unknown_fields {
            warn!("plugin configuration: unknown field {field:?} ignored");
        }
        let resolved = identity::resolve(host::property);
        for problem in &resolved.problems {
            warn!("workload identity: {problem}");
        }
        self.workload = resolved.workload;
        info!(
            "workload {}/{}; policies from cluster {}",
            self.workload.namespace, self.workload.name, parsed.config.broadcaster_cluster
        );
        let now_ns = host::now_ns().unwrap_or(0);
        self.poller = Some(Poller::new(
            &parsed.config,
            now_ns / NS_PER_MS,
            &self.workload,
            resolved.labels_known,
        ));
        let max_held = parsed.config.max_held_requests;
        self.config = Some(parsed.config);
        {
            let mut vm = self.vm.borrow_mut();
            vm.active = true;
            vm.max_held = max_held;
            vm.gauge(metrics::CONFIG_REVISION, 0);
            vm.poll_wake_ns = now_ns;
            vm.rearm(now_ns);
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(now_ns) = host::now_ns() else {
            return;
        };
        self.serve_tick(now_ns);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id: context_id,
            vm: Rc::clone(&self.vm),
            tag: None,
            held_until_ns: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP request/response.
struct Request {
    id: u32,
    vm: Rc<RefCell<Vm>>,
    /// Policy name for `x-boifi-fault` on a response that was delayed but not aborted.
    tag: Option<String>,
    /// Deadline of this request's hold (its key in the holds), once it was held.
    held_until_ns: Option<u64>,
}

impl Request {
    fn decide(&mut self) -> Action {
        let mut vm = self.vm.borrow_mut();
        // Not configured: fail open.
        if !vm.active {
            return Action::Continue;
        }
        let set = Rc::clone(&vm.set);
        // Nothing can apply: read nothing, the common case must stay cheap.
        if set.halted() || set.policies().is_empty() {
            return Action::Continue;
        }
        let Some(now_ns) = host::now_ns() else {
            vm.count(metrics::FAIL_OPEN, 1);
            return Action::Continue;
        };
        // Headers are fetched one by one as rules ask for them, not as a whole map.
        let request = LazyRequest::new(host::RequestHeaders, set.header_names());
        let mut sampler = Sampler::new(&mut vm.rng);
        let decision = decide(&request, &set, now_ns / NS_PER_MS, &mut sampler);
        if sampler.missing_request_id() {
            vm.count(metrics::NO_REQUEST_ID, 1);
        }
        // A rule saw a value the host failed to give: the decision may be wrong, pass.
        if request.failed() {
            vm.count(metrics::FAIL_OPEN, 1);
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
        let cap = policy.max_held_requests().map_or(vm.max_held, u64::from);
        if plan.hold_ms() > 0 && vm.holds.len() as u64 >= cap {
            vm.count(metrics::HELD_OVERFLOW, 1);
            return Action::Continue;
        }
        let name = policy.name();
        if plan.delay_ms.is_some() {
            vm.count(&metrics::faults_injected(name, FaultType::Delay), 1);
        }
        if plan.abort {
            vm.count(&metrics::faults_injected(name, FaultType::Abort), 1);
        } else {
            self.tag = Some(name.to_owned());
        }
        if plan.hold_ms() == 0 {
            if plan.abort && !send_abort(&set, &plan) {
                vm.count(metrics::FAIL_OPEN, 1);
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
        vm.holds.insert(
            self.id,
            deadline_ns,
            Held {
                plan,
                set: Rc::clone(&set),
                arrived_ns: now_ns,
            },
        );
        vm.held_changed(1);
        self.held_until_ns = Some(deadline_ns);
        if deadline_ns < vm.armed_wake_ns {
            vm.rearm(now_ns);
        }
        // Resumed (or aborted) by the root's tick at the deadline; dropped if the request ends.
        Action::Pause
    }

    fn is_held(&self) -> bool {
        self.held_until_ns
            .is_some_and(|deadline| self.vm.borrow().holds.contains(self.id, deadline))
    }
}

impl Context for Request {
    fn on_done(&mut self) -> bool {
        // A request that went away while held must not be resumed later.
        if let Some(deadline) = self.held_until_ns {
            let mut vm = self.vm.borrow_mut();
            if vm.holds.remove(self.id, deadline).is_some() {
                vm.held_changed(-1);
            }
        }
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.decide()
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // While held, Continue here would let Envoy forward the headers early.
        if self.is_held() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.is_held() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(policy) = &self.tag {
            if !host::set_response_header(FAULT_HEADER, policy) {
                self.vm.borrow_mut().count(metrics::FAIL_OPEN, 1);
            }
        }
        Action::Continue
    }
}
