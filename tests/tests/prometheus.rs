//! A real Prometheus scrapes what a mesh exposes: policy-api's and the sse-broadcaster's
//! `/metrics`, and the `/stats/prometheus` of a real Envoy run as Istio runs a sidecar (Istio's
//! default stats tags and matcher, the plugin over ECDS), with the chart's relabel rules.
//! Faults injected through the API must show up in Prometheus as
//! `boifi_faults_injected{policy="...",fault_type="..."}` with the exact count, for policy
//! names that Istio's unanchored tag regexes would cut apart if the plugin's stat names let
//! them, and for names whose hyphens Prometheus turns into underscores.
//!
//! policy-api and the broadcaster run in this process on one embedded store (as `boifi serve`
//! does); Envoy, the plugin and Prometheus are the real ones.

use std::time::{Duration, Instant};

use boifi_sse_broadcaster::Settings;
use boifi_tests::envoy::{Envoy, EnvoyBuilder, Upstream};
use boifi_tests::http::http_request;
use boifi_tests::prometheus::{PrometheusBuilder, Sample};
use boifi_tests::services::Services;
use boifi_tests::wait_until;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);
const ABORTS: usize = 7;
const DELAYS: usize = 3;

/// The rules the chart's PodMonitor applies and docs/deploy.md tells Prometheus users to add.
const RELABEL: &str = include_str!("../../helm/boifi/files/plugin-metric-relabel.yaml");
/// Policy names Istio's default tags would cut into: `(cache\.(.+?)\.)`,
/// `(component\.(.+?)\.)`, `rbac(\.(allowed|denied))`.
const ABORT_POLICY: &str = "redis-cache";
const DELAY_POLICY: &str = "slow-component-rbac";
/// The most hyphens a name can have (61 of 63 characters), which Prometheus writes as `_`;
/// with the delay policy's two, every step of the rules that put them back is used.
const LONG_POLICY: &str = "a-------------------------------------------------------------z";
const LONG_ABORTS: usize = 2;

fn deadline() -> Instant {
    // The first scrape lands about 5 s after Prometheus starts; the machine has 2 cores.
    Instant::now() + Duration::from_secs(45)
}

/// Waits until every plugin VM of `envoy` runs `revision`.
fn wait_for_revision(envoy: &Envoy, revision: u64) {
    let reached = wait_until(deadline(), || envoy.has_applied(revision));
    assert!(reached, "every plugin VM at revision {revision}");
}

fn one(samples: &[Sample]) -> Option<f64> {
    match samples {
        [s] => Some(s.value),
        _ => None,
    }
}

#[test]
fn prometheus_sees_fault_counters_with_policy_and_type_labels() {
    let services = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), services.broadcaster().port()).start();
    let prometheus = PrometheusBuilder::new()
        .scrape("policy-api", services.api(), "/metrics")
        .scrape("sse-broadcaster", services.broadcaster(), "/metrics")
        .scrape("envoy", envoy.admin_addr(), "/stats/prometheus")
        .metric_relabel_configs(RELABEL)
        .start();
    assert_eq!(LONG_POLICY.len(), 63);

    services.create(&json!({
        "metadata": {"name": ABORT_POLICY},
        "spec": {
            "selector": {"namespace": "demo", "service": "reviews"},
            "rules": [{"match": {"path": {"prefix": "/api"}}, "fault": {"abort": {"httpStatus": 503}}}]
        }
    }));
    services.create(&json!({
        "metadata": {"name": LONG_POLICY},
        "spec": {"rules": [{"match": {"path": {"prefix": "/long"}}, "fault": {"abort": {"httpStatus": 500}}}]}
    }));
    let revision = services.create(&json!({
        "metadata": {"name": DELAY_POLICY},
        "spec": {
            "selector": {"labels": {"app": "reviews"}},
            "rules": [{"match": {"path": {"prefix": "/slow"}}, "fault": {"delay": {"fixed_delay_ms": 20}}}]
        }
    }));
    wait_for_revision(&envoy, revision);
    for _ in 0..ABORTS {
        let r = http_request(envoy.addr(), "GET", "/api/x", &[], None, TIMEOUT).expect("abort");
        assert_eq!(r.status, 503);
    }
    for _ in 0..DELAYS {
        let r = http_request(envoy.addr(), "GET", "/slow", &[], None, TIMEOUT).expect("delay");
        assert_eq!(
            (r.status, r.header("x-boifi-fault")),
            (200, Some(DELAY_POLICY))
        );
    }
    for _ in 0..LONG_ABORTS {
        let r = http_request(envoy.addr(), "GET", "/long", &[], None, TIMEOUT).expect("abort");
        assert_eq!(r.status, 500);
    }
    // In the sidecar, Istio's tags left the names whole.
    assert_eq!(
        envoy.stat(&format!(
            "wasmcustom.boifi_faults_injected.fault_type.abort.policy.{ABORT_POLICY}"
        )),
        Some(ABORTS as u64)
    );
    let r = http_request(envoy.addr(), "GET", "/ok", &[], None, TIMEOUT).expect("untouched");
    assert_eq!(r.status, 200);

    // Every target is scraped.
    let up = prometheus
        .wait_for("up == 1", deadline(), |s| s.len() == 3)
        .unwrap_or_else(|e| panic!("all targets up: {e}"));
    let mut jobs: Vec<_> = up.iter().filter_map(|s| s.label("job")).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["envoy", "policy-api", "sse-broadcaster"]);

    // The counters, one series per policy and type, labels from the relabel rules.
    let abort = prometheus
        .wait_for(
            &format!(r#"boifi_faults_injected{{policy="{ABORT_POLICY}",fault_type="abort"}}"#),
            deadline(),
            |s| one(s) == Some(ABORTS as f64),
        )
        .unwrap_or_else(|e| panic!("abort counter: {e}"));
    assert_eq!(abort[0].label("job"), Some("envoy"));
    let all = prometheus
        .wait_for("boifi_faults_injected", deadline(), |s| s.len() == 3)
        .unwrap_or_else(|e| panic!("delay counter: {e}"));
    let mut series: Vec<_> = all
        .iter()
        .map(|s| {
            (
                s.label("policy").unwrap_or(""),
                s.label("fault_type").unwrap_or(""),
                s.value,
            )
        })
        .collect();
    series.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    assert_eq!(
        series,
        [
            (LONG_POLICY, "abort", LONG_ABORTS as f64),
            (ABORT_POLICY, "abort", ABORTS as f64),
            (DELAY_POLICY, "delay", DELAYS as f64),
        ]
    );
    // No metric carries a policy name in its own name: the rules took every one out.
    let leaked = prometheus
        .query(r#"{__name__=~"boifi_.*(policy|cache|rbac).*"}"#)
        .expect("query");
    assert!(leaked.is_empty(), "{leaked:?}");
    // Envoy updates histograms when it flushes stats (every 5 s).
    prometheus
        .wait_for(
            &format!(r#"boifi_fault_delay_ms_count{{policy="{DELAY_POLICY}"}}"#),
            deadline(),
            |s| one(s) == Some(DELAYS as f64),
        )
        .unwrap_or_else(|e| panic!("delay histogram: {e}"));

    // The services' own metrics: three policies stored, the plugin's polls held by the
    // broadcaster (one per VM), the broadcaster at the last revision.
    let policies = prometheus
        .wait_for(r#"boifi_policies{job="policy-api"}"#, deadline(), |s| {
            one(s) == Some(3.0)
        })
        .unwrap_or_else(|e| panic!("policy-api gauge: {e}"));
    assert_eq!(policies[0].label("job"), Some("policy-api"));
    prometheus
        .wait_for(
            r#"boifi_broadcaster_store_revision{job="sse-broadcaster"}"#,
            deadline(),
            |s| one(s) == Some(revision as f64),
        )
        .unwrap_or_else(|e| panic!("broadcaster revision: {e}"));
    prometheus
        .wait_for(
            r#"boifi_broadcaster_clients{job="sse-broadcaster",mode="poll"}"#,
            deadline(),
            |s| one(s).is_some_and(|n| n >= 1.0),
        )
        .unwrap_or_else(|e| panic!("plugin polls held: {e}"));
}
