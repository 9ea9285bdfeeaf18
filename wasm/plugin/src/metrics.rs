//! Envoy stats the plugin defines, and their names.
//!
//! Wasm stats carry no labels, so the fault type and the policy are parts of the stat name;
//! Prometheus turns them back into `fault_type` and `policy` labels with the relabel rules the
//! chart ships (`helm/boifi/files/plugin-metric-relabel.yaml`). Envoy files every plugin stat
//! under `wasmcustom.`.
//!
//! The policy name always comes **last**. Istio's sidecar bootstrap carries stats tag regexes
//! that are not anchored, such as `(cache\.(.+?)\.)` and `(component\.(.+?)\.)`: Envoy
//! applies them to every stat name, ours included, and with a dot after the policy name a
//! policy called `redis-cache` would lose `cache.` and the next segment to a `cache` tag.
//! Policy names are DNS labels (no dots, no underscores), so with nothing after them no such
//! pattern can reach into them, and every fixed segment before them is free of the words
//! those patterns look for. `tests/tests/prometheus.rs` checks this against Istio's tag set.

/// Faults applied, per policy and type: `boifi_faults_injected.fault_type.<t>.policy.<p>`.
pub const FAULTS_INJECTED: &str = "boifi_faults_injected";
/// Time requests were actually held by a fault (start delay plus delay), in ms, per policy.
pub const FAULT_DELAY_MS: &str = "boifi_fault_delay_ms";
/// Store revision of the policy set in use (0 before the first snapshot).
pub const CONFIG_REVISION: &str = "boifi_config_revision";
/// Policies in use that select this workload.
pub const POLICIES_ACTIVE: &str = "boifi_policies_active";
/// 1 while the kill switch is on.
pub const HALTED: &str = "boifi_halted";
/// Snapshots applied.
pub const CONFIG_UPDATES: &str = "boifi_config_updates";
/// Polls that failed (no answer, bad status or body); the last good set stays in use.
pub const CONFIG_FETCH_FAILURES: &str = "boifi_config_fetch_failures";
/// Policies of a snapshot the plugin could not use (skipped; the others apply).
pub const POLICIES_REJECTED: &str = "boifi_policies_rejected";
/// Requests a policy sampling by request had to draw per attempt: no `x-request-id`.
pub const NO_REQUEST_ID: &str = "boifi_sampled_without_request_id";
/// Requests held by delays right now, summed over the sidecar's VMs.
pub const HELD_REQUESTS: &str = "boifi_held_requests";
/// Requests a delay would have held past the cap (`max_held_requests`): passed unfaulted.
pub const HELD_OVERFLOW: &str = "boifi_held_overflow";
/// 1 when the sidecar's labels were left out of its reports (too many or too long); policy-api
/// then cannot match it against selectors with labels.
pub const REPORT_LABELS_DROPPED: &str = "boifi_report_labels_dropped";
/// Times the plugin let traffic through because it could not work: bad configuration, or a
/// host call that failed while applying a fault.
pub const FAIL_OPEN: &str = "boifi_fail_open";

/// The kind of stat; mirrors proxy-wasm's metric types without depending on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The two fault types a stat can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultType {
    Abort,
    Delay,
}

impl FaultType {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultType::Abort => "abort",
            FaultType::Delay => "delay",
        }
    }
}

pub fn faults_injected(policy: &str, fault_type: FaultType) -> String {
    format!(
        "{FAULTS_INJECTED}.fault_type.{}.policy.{policy}",
        fault_type.as_str()
    )
}

pub fn fault_delay_ms(policy: &str) -> String {
    format!("{FAULT_DELAY_MS}.policy.{policy}")
}

/// Defines each stat once per VM and remembers its id; Envoy hands out a new id per
/// definition, so defining per request would grow without bound. A list searched linearly:
/// stats are few (a handful per policy that ever fired) and lookups happen only on faults.
#[derive(Debug, Default)]
pub struct Registry {
    ids: Vec<(String, u32)>,
}

impl Registry {
    /// The id of stat `name`, defining it with `define` on first use; `None` if the host
    /// refused (then the next use tries again).
    pub fn id(
        &mut self,
        kind: Kind,
        name: &str,
        define: impl FnOnce(Kind, &str) -> Option<u32>,
    ) -> Option<u32> {
        if let Some((_, id)) = self.ids.iter().find(|(n, _)| n == name) {
            return Some(*id);
        }
        let id = define(kind, name)?;
        self.ids.push((name.to_owned(), id));
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_policy_and_type() {
        assert_eq!(
            faults_injected("reviews-abort", FaultType::Abort),
            "boifi_faults_injected.fault_type.abort.policy.reviews-abort"
        );
        assert_eq!(
            faults_injected("p", FaultType::Delay),
            "boifi_faults_injected.fault_type.delay.policy.p"
        );
        assert_eq!(fault_delay_ms("p"), "boifi_fault_delay_ms.policy.p");
    }

    #[test]
    fn registry_defines_each_name_once() {
        let mut defined = Vec::new();
        let mut next = 10;
        let mut registry = Registry::default();
        let mut define = |kind, name: &str| {
            defined.push((kind, name.to_owned()));
            next += 1;
            Some(next)
        };
        assert_eq!(registry.id(Kind::Counter, "a", &mut define), Some(11));
        assert_eq!(registry.id(Kind::Counter, "a", &mut define), Some(11));
        assert_eq!(registry.id(Kind::Gauge, "b", &mut define), Some(12));
        assert_eq!(defined.len(), 2);
    }

    #[test]
    fn refused_definitions_are_retried_later() {
        let mut calls = 0;
        let mut registry = Registry::default();
        let mut define = |_, _: &str| {
            calls += 1;
            (calls > 1).then_some(5)
        };
        assert_eq!(registry.id(Kind::Counter, "a", &mut define), None);
        assert_eq!(registry.id(Kind::Counter, "a", &mut define), Some(5));
    }
}
