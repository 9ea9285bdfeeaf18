//! The chart's Grafana dashboard and alert rules against what a local mesh really exports: a
//! real Prometheus scrapes policy-api, the sse-broadcaster and a sidecar-like Envoy running the
//! real plugin (with the chart's relabel rules), loads `helm/boifi/files/prometheus-rules.yaml`,
//! and every query of `helm/boifi/files/grafana-dashboard.json` must return data. A panel whose
//! metric was renamed, or whose labels the relabel rules no longer produce, fails here.
//!
//! Grafana's own variables are given the values Grafana would: `$__rate_interval` a window of
//! several scrapes, `$__range` the dashboard's time range.

use std::time::{Duration, Instant};

use boifi_sse_broadcaster::Settings;
use boifi_tests::binaries::repo_file;
use boifi_tests::envoy::{EnvoyBuilder, Upstream};
use boifi_tests::http::http_request;
use boifi_tests::prometheus::{Prometheus, PrometheusBuilder, Sample};
use boifi_tests::services::Services;
use boifi_tests::wait_until;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(10);
const RELABEL: &str = include_str!("../../helm/boifi/files/plugin-metric-relabel.yaml");
const DASHBOARD: &str = include_str!("../../helm/boifi/files/grafana-dashboard.json");

fn deadline() -> Instant {
    // The first scrape lands about 5 s after Prometheus starts; the machine has 2 cores.
    Instant::now() + Duration::from_secs(45)
}

/// Every query of the dashboard, with the panel it belongs to, Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "15s")
                .replace("$__range", "1h");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            queries.push((title, expr));
        }
    }
    queries
}

fn value(prometheus: &Prometheus, promql: &str, expected: f64) -> Result<Vec<Sample>, String> {
    prometheus.wait_for(
        promql,
        deadline(),
        |s| matches!(s, [one] if one.value == expected),
    )
}

#[test]
fn every_dashboard_query_returns_data_from_a_local_mesh() {
    let services = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), services.broadcaster().port())
        .workload("demo", "reviews")
        .start();
    let prometheus = PrometheusBuilder::new()
        .rule_file(&repo_file("helm/boifi/files/prometheus-rules.yaml"))
        .scrape("policy-api", services.api(), "/metrics")
        .scrape("sse-broadcaster", services.broadcaster(), "/metrics")
        .scrape("envoy", envoy.admin_addr(), "/stats/prometheus")
        .metric_relabel_configs(RELABEL)
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
            "selector": {"namespace": "demo"},
            "rules": [{"match": {"path": {"prefix": "/slow"}}, "fault": {"delay": {"fixed_delay_ms": 5}}}]
        }
    }));
    assert!(
        wait_until(deadline(), || envoy.has_applied(revision)),
        "every plugin VM at revision {revision}"
    );

    // Traffic for as long as the queries need it: the rate panels look at the last 15 s.
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        let found = prometheus.wait_for(expr, deadline(), |samples| {
            for path in ["/api/x", "/slow"] {
                let r = http_request(envoy.addr(), "GET", path, &[], None, TIMEOUT);
                assert!(r.is_ok_and(|r| r.header("x-boifi-fault").is_some()));
            }
            !samples.is_empty()
        });
        if let Err(e) = found {
            missing.push(format!("{title}: {e}"));
        }
    }
    assert!(
        missing.is_empty(),
        "queries without data:\n{}",
        missing.join("\n")
    );

    // The faults by policy and type, as the first panel shows them.
    let by_policy = prometheus
        .query("sum by (policy, fault_type) (boifi_faults_injected)")
        .expect("query");
    let mut seen: Vec<_> = by_policy
        .iter()
        .map(|s| (s.label("policy"), s.label("fault_type")))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            (Some("reviews-abort"), Some("abort")),
            (Some("reviews-delay"), Some("delay"))
        ]
    );

    // The halt state the dashboard and the alerts read is policy-api's, even though the
    // plugin exports a gauge of the same name per sidecar.
    value(&prometheus, "boifi:halted:max", 0.0).unwrap_or_else(|e| panic!("running: {e}"));
    services.set_halt(true);
    value(&prometheus, "boifi:halted:max", 1.0).unwrap_or_else(|e| panic!("halted: {e}"));
    value(&prometheus, r#"boifi_halted{job="envoy"}"#, 1.0)
        .unwrap_or_else(|e| panic!("the sidecar got the halt: {e}"));
    let r = http_request(envoy.addr(), "GET", "/api/x", &[], None, TIMEOUT).expect("request");
    assert_eq!(r.status, 200, "no fault while halted");
}
