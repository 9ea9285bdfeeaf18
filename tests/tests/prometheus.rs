//! A real Prometheus scrapes what a mesh exposes: policy-api's and the sse-broadcaster's
//! `/metrics`, and a real Envoy's `/stats/prometheus` with the real plugin and the chart's
//! `stats_tags`. Faults injected through the API must show up in Prometheus as
//! `boifi_faults_injected{policy="...",fault_type="..."}` with the exact count.
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

/// The plugin's Envoy config (every real-Envoy test) and the chart (every sidecar in a mesh).
const ENVOY_TEMPLATE: &str = include_str!("../../wasm/plugin/envoy.yaml");
const CHART_VALUES: &str = include_str!("../../helm/boifi/values.yaml");

fn deadline() -> Instant {
    // The first scrape lands about 5 s after Prometheus starts; the machine has 2 cores.
    Instant::now() + Duration::from_secs(45)
}

/// The `regex: '...'` lines, in order.
fn regex_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("regex: '"))
        .collect()
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
fn chart_and_plugin_config_use_the_same_stats_tags() {
    let plugin = regex_lines(ENVOY_TEMPLATE);
    assert_eq!(plugin.len(), 2, "{plugin:?}");
    assert_eq!(plugin, regex_lines(CHART_VALUES));
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
        .start();

    services.create(&json!({
        "metadata": {"name": "reviews-abort"},
        "spec": {
            "selector": {"namespace": "demo", "service": "reviews"},
            "rules": [{"match": {"path": {"prefix": "/api"}}, "fault": {"abort": {"httpStatus": 503}}}]
        }
    }));
    let revision = services.create(&json!({
        "metadata": {"name": "reviews-delay"},
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
            (200, Some("reviews-delay"))
        );
    }
    let r = http_request(envoy.addr(), "GET", "/ok", &[], None, TIMEOUT).expect("untouched");
    assert_eq!(r.status, 200);

    // Every target is scraped.
    let up = prometheus
        .wait_for("up == 1", deadline(), |s| s.len() == 3)
        .unwrap_or_else(|e| panic!("all targets up: {e}"));
    let mut jobs: Vec<_> = up.iter().filter_map(|s| s.label("job")).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["envoy", "policy-api", "sse-broadcaster"]);

    // The counters, one series per policy and type, labels from the tag rules.
    let abort = prometheus
        .wait_for(
            r#"boifi_faults_injected{policy="reviews-abort",fault_type="abort"}"#,
            deadline(),
            |s| one(s) == Some(ABORTS as f64),
        )
        .unwrap_or_else(|e| panic!("abort counter: {e}"));
    assert_eq!(abort[0].label("job"), Some("envoy"));
    let all = prometheus
        .wait_for("boifi_faults_injected", deadline(), |s| {
            s.iter().any(|s| s.label("fault_type") == Some("delay"))
        })
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
            ("reviews-abort", "abort", ABORTS as f64),
            ("reviews-delay", "delay", DELAYS as f64)
        ]
    );
    // No metric carries a policy name in its own name: the tags took it out.
    let leaked = prometheus
        .query(r#"{__name__=~".*reviews.*"}"#)
        .expect("query");
    assert!(leaked.is_empty(), "{leaked:?}");
    // Envoy updates histograms when it flushes stats (every 5 s).
    prometheus
        .wait_for(
            r#"boifi_fault_delay_ms_count{policy="reviews-delay"}"#,
            deadline(),
            |s| one(s) == Some(DELAYS as f64),
        )
        .unwrap_or_else(|e| panic!("delay histogram: {e}"));

    // The services' own metrics: two policies stored, the plugin's polls held by the
    // broadcaster (one per VM), the broadcaster at the last revision.
    let policies = prometheus
        .wait_for(r#"boifi_policies{job="policy-api"}"#, deadline(), |s| {
            one(s) == Some(2.0)
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
