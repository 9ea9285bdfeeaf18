//! The per-request decision, as a pure function of the request, the policies, the time and a
//! random source.
//!
//! Guards, in order: halted? then per policy (sorted by name) and rule (in policy order):
//! expired? request match? sampled? The first rule that is active, matches and is sampled
//! decides. Each rule gets at most one draw per request, and the draw is never repeated later
//! (after a delay, say), so the share of faulted requests is exactly the configured one.
//! Selectors are applied once, when a policy set is built for this workload, not per request.
//!
//! Draws come from a [`Sampler`]: for a policy sampling by request (the default) the draw is a
//! function of the request's `x-request-id` ([`boifi_policy::sampling`]), so every retry of a
//! request gets the same answer on every replica; without that header, and for `attempt`
//! sampling, from the VM's random numbers.

use std::cell::Cell;

use boifi_policy::sampling::request_draw;
use boifi_policy::{
    CompiledAbort, CompiledFault, CompiledPolicy, RequestLookup, Sampling, Workload,
};

use crate::rng::Rng;

/// The policies that apply to this workload, as of one broadcaster snapshot.
#[derive(Debug, Default)]
pub struct PolicySet {
    revision: u64,
    halted: bool,
    policies: Vec<CompiledPolicy>,
    /// The request headers any rule looks at, each once.
    header_names: Vec<String>,
}

impl PolicySet {
    /// Keeps the policies whose selector matches `workload`, ordered by name so every sidecar
    /// tries them in the same order.
    pub fn new(
        revision: u64,
        halted: bool,
        policies_in: impl IntoIterator<Item = CompiledPolicy>,
        workload: &Workload,
    ) -> Self {
        // Sorted by name, stably (equal names keep their order), by binary insertion: the
        // snapshot comes sorted by name, so each insertion is an append, and a `sort_by` here
        // would cost the module about 3 KB of sorting code.
        let mut policies: Vec<CompiledPolicy> = Vec::new();
        for policy in policies_in.into_iter() {
            if policy.selector().matches(workload) {
                let at = policies.partition_point(|p| p.name() <= policy.name());
                policies.insert(at, policy);
            }
        }
        let mut header_names: Vec<String> = Vec::new();
        for policy in &policies {
            for name in policy.header_names() {
                if !header_names.iter().any(|n| n == name) {
                    header_names.push(name.to_owned());
                }
            }
        }
        PolicySet {
            revision,
            halted,
            policies,
            header_names,
        }
    }

    /// Store revision of the snapshot; 0 before the first one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The kill switch: no fault acts while it is set.
    pub fn halted(&self) -> bool {
        self.halted
    }

    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    /// The request headers its rules look at (lower-case, each once): all a request needs to
    /// be read for, besides `:method` and `:path`.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The policy a [`FaultPlan`] of this set came from.
    pub fn policy(&self, plan: &FaultPlan) -> Option<&CompiledPolicy> {
        self.policies.get(plan.policy)
    }

    /// The fault a [`FaultPlan`] of this set came from.
    pub fn fault(&self, plan: &FaultPlan) -> Option<&CompiledFault> {
        self.policy(plan)?
            .rules()
            .get(plan.rule)
            .map(|rule| rule.fault())
    }

    /// The abort to send when the plan's hold ends, if the fault has one.
    pub fn abort(&self, plan: &FaultPlan) -> Option<&CompiledAbort> {
        self.fault(plan)?.abort()
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward untouched.
    Pass,
    Fault(FaultPlan),
}

/// A fault to apply: hold the request `start_delay_ms + delay_ms`, then abort it or forward it.
/// Indices point into the [`PolicySet`] the decision was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    pub policy: usize,
    pub rule: usize,
    pub start_delay_ms: u64,
    /// The delay fault's duration; `None` when the rule has no delay.
    pub delay_ms: Option<u64>,
    pub abort: bool,
}

impl FaultPlan {
    /// How long the request is held before the abort (or before it is forwarded).
    pub fn hold_ms(&self) -> u64 {
        self.start_delay_ms
            .saturating_add(self.delay_ms.unwrap_or(0))
    }
}

/// The header Envoy keeps across a caller's retries and hops.
pub const REQUEST_ID: &str = "x-request-id";

/// The draws of one [`decide`] call, and whether one of them lacked the request id it wanted.
pub struct Sampler<'r, R> {
    rng: &'r mut R,
    missing_request_id: bool,
}

impl<'r, R: Rng> Sampler<'r, R> {
    pub fn new(rng: &'r mut R) -> Self {
        Sampler {
            rng,
            missing_request_id: false,
        }
    }

    /// True when a policy sampling by request met a request without `x-request-id` and drew
    /// per attempt instead (the plugin counts it).
    pub fn missing_request_id(&self) -> bool {
        self.missing_request_id
    }

    /// The one draw for rule `rule` of `policy` on this request.
    fn sample(
        &mut self,
        request: &impl RequestLookup,
        policy: &CompiledPolicy,
        rule: usize,
        fault: &CompiledFault,
    ) -> bool {
        // 0 % and 100 % need no draw: exact, and no header is read for them.
        let percentage = fault.percentage();
        if percentage >= 100.0 || percentage <= 0.0 {
            return percentage >= 100.0;
        }
        if policy.sampling() == Sampling::Request {
            let draw = Cell::new(None);
            request.any_header_value(REQUEST_ID, &|id| {
                draw.set(Some(request_draw(id, policy.name(), rule)));
                true
            });
            match draw.get() {
                Some(draw) => return fault.sample(draw),
                None => self.missing_request_id = true,
            }
        }
        fault.sample(self.rng.next_u64())
    }
}

/// Decides for one request at `now_ms` (Unix ms; expiry times are the server's). `request` is
/// read only as far as the rules get (see [`crate::request`]).
pub fn decide(
    request: &impl RequestLookup,
    set: &PolicySet,
    now_ms: u64,
    sampler: &mut Sampler<'_, impl Rng>,
) -> Decision {
    // Halted: the kill switch stops every fault at once, whatever the rules say.
    if set.halted {
        return Decision::Pass;
    }
    for (policy_index, policy) in set.policies.iter().enumerate() {
        for (rule_index, rule) in policy.rules().iter().enumerate() {
            // Expired: stop on time by the server's expiry, even while the broadcaster is away.
            if !rule.is_active(now_ms) {
                continue;
            }
            // Not for this request: no draw, so other rules' shares are unaffected.
            if !rule.matches(request) {
                continue;
            }
            let fault = rule.fault();
            // Not sampled: the one draw for this rule and request said no; later rules may act.
            if !sampler.sample(request, policy, rule_index, fault) {
                continue;
            }
            return Decision::Fault(FaultPlan {
                policy: policy_index,
                rule: rule_index,
                start_delay_ms: duration_ms(fault.start_delay()),
                delay_ms: fault.delay().map(duration_ms),
                abort: fault.abort().is_some(),
            });
        }
    }
    Decision::Pass
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
