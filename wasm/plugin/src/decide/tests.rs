use std::collections::BTreeMap;

use boifi_policy::{compile, Policy, RequestView};
use serde_json::json;

use super::*;
use crate::rng::SplitMix64;

/// Replays fixed draws; panics if asked for more (a test bug: a rule drew twice).
struct Draws(Vec<u64>);

impl Rng for Draws {
    fn next_u64(&mut self) -> u64 {
        assert!(!self.0.is_empty(), "more draws than the test expected");
        self.0.remove(0)
    }
}

fn policy(value: serde_json::Value) -> CompiledPolicy {
    let policy: Policy = serde_json::from_value(value).expect("well-typed policy");
    compile(&policy).expect("valid policy")
}

fn abort_policy(name: &str, percentage: f64) -> CompiledPolicy {
    policy(json!({
        "metadata": {"name": name},
        "spec": {"rules": [{"fault": {"percentage": percentage, "abort": {"httpStatus": 503}}}]}
    }))
}

fn workload() -> Workload {
    Workload {
        namespace: "demo".into(),
        name: "reviews-v2".into(),
        labels: BTreeMap::from([("app".into(), "reviews".into())]),
    }
}

fn set(policies: Vec<CompiledPolicy>) -> PolicySet {
    PolicySet::new(7, false, policies, &workload())
}

fn get(path: &str) -> RequestView<'_> {
    RequestView {
        method: "GET",
        path,
        headers: &[],
    }
}

const HALF: u64 = 1 << 63;

#[test]
fn empty_set_passes_without_drawing() {
    let mut draws = Draws(vec![]);
    assert_eq!(
        decide(
            &get("/"),
            &PolicySet::default(),
            0,
            &mut Sampler::new(&mut draws)
        ),
        Decision::Pass
    );
}

#[test]
fn halted_set_passes_without_drawing() {
    let set = PolicySet::new(3, true, [abort_policy("a", 100.0)], &workload());
    assert!(set.halted());
    assert_eq!(
        decide(&get("/"), &set, 0, &mut Sampler::new(&mut Draws(vec![]))),
        Decision::Pass
    );
}

#[test]
fn abort_with_all_parts() {
    let set = set(vec![abort_policy("a", 100.0)]);
    let decision = decide(
        &get("/"),
        &set,
        0,
        &mut Sampler::new(&mut Draws(vec![u64::MAX])),
    );
    let Decision::Fault(plan) = decision else {
        panic!("expected a fault, got {decision:?}");
    };
    assert_eq!(
        plan,
        FaultPlan {
            policy: 0,
            rule: 0,
            start_delay_ms: 0,
            delay_ms: None,
            abort: true
        }
    );
    assert_eq!(plan.hold_ms(), 0);
    assert_eq!(set.policy(&plan).map(|p| p.name()), Some("a"));
    assert_eq!(set.abort(&plan).map(|a| a.status()), Some(503));
}

#[test]
fn start_delay_delay_and_abort_add_up() {
    let set = set(vec![policy(json!({
        "metadata": {"name": "slow-then-fail"},
        "spec": {"rules": [{"fault": {
            "start_delay_ms": 40,
            "delay": {"fixed_delay_ms": 200},
            "abort": {"httpStatus": 500, "body": "boom", "headers": {"X-K": "v"}}
        }}]}
    }))]);
    let Decision::Fault(plan) = decide(&get("/"), &set, 0, &mut Sampler::new(&mut Draws(vec![0])))
    else {
        panic!("expected a fault");
    };
    assert_eq!(
        (plan.start_delay_ms, plan.delay_ms, plan.abort),
        (40, Some(200), true)
    );
    assert_eq!(plan.hold_ms(), 240);
    let abort = set.abort(&plan).expect("abort");
    assert_eq!(abort.body(), Some("boom"));
    assert_eq!(abort.headers(), &[("x-k".to_owned(), "v".to_owned())]);
}

#[test]
fn percentage_zero_never_and_hundred_always() {
    let never = set(vec![abort_policy("never", 0.0)]);
    let always = set(vec![abort_policy("always", 100.0)]);
    for draw in [0, 1, HALF, u64::MAX - 1, u64::MAX] {
        assert_eq!(
            decide(
                &get("/"),
                &never,
                0,
                &mut Sampler::new(&mut Draws(vec![draw]))
            ),
            Decision::Pass
        );
        assert!(matches!(
            decide(
                &get("/"),
                &always,
                0,
                &mut Sampler::new(&mut Draws(vec![draw]))
            ),
            Decision::Fault(_)
        ));
    }
}

#[test]
fn percentage_is_respected_over_many_requests() {
    let set = set(vec![abort_policy("thirty", 30.0)]);
    let mut rng = SplitMix64::new(2024);
    let n = 100_000;
    let faults = (0..n)
        .filter(|_| {
            matches!(
                decide(&get("/"), &set, 0, &mut Sampler::new(&mut rng)),
                Decision::Fault(_)
            )
        })
        .count();
    // Expect 30000, sd = sqrt(n p (1-p)) ~ 145: 29300..30700 is about 4.8 sd.
    assert!((29_300..30_700).contains(&faults), "{faults}");
}

#[test]
fn one_draw_per_matching_rule_and_first_sampled_rule_decides() {
    let set = set(vec![policy(json!({
        "metadata": {"name": "two-rules"},
        "spec": {"rules": [
            {"match": {"path": {"prefix": "/api"}}, "fault": {"percentage": 50, "abort": {"httpStatus": 500}}},
            {"match": {"path": {"prefix": "/other"}}, "fault": {"abort": {"httpStatus": 501}}},
            {"fault": {"percentage": 50, "delay": {"fixed_delay_ms": 5}}}
        ]}
    }))]);
    // First rule matches, draw says no; second does not match (no draw); third draws yes.
    let mut draws = Draws(vec![u64::MAX, 0]);
    let Decision::Fault(plan) = decide(&get("/api/x"), &set, 0, &mut Sampler::new(&mut draws))
    else {
        panic!("expected the third rule");
    };
    assert_eq!((plan.rule, plan.delay_ms, plan.abort), (2, Some(5), false));
    assert!(draws.0.is_empty());
    // First rule sampled in: one draw only.
    let mut draws = Draws(vec![0]);
    let Decision::Fault(plan) = decide(&get("/api/x"), &set, 0, &mut Sampler::new(&mut draws))
    else {
        panic!("expected the first rule");
    };
    assert_eq!(plan.rule, 0);
}

#[test]
fn non_matching_requests_pass() {
    let set = set(vec![policy(json!({
        "metadata": {"name": "narrow"},
        "spec": {"rules": [{
            "match": {
                "method": {"exact": "POST"},
                "path": {"regex": "/items/[0-9]+"},
                "headers": [{"name": "x-user", "exact": "test"}]
            },
            "fault": {"abort": {"httpStatus": 418}}
        }]}
    }))]);
    let headers = [("X-User", "test")];
    let hit = RequestView {
        method: "POST",
        path: "/items/42?verbose=1",
        headers: &headers,
    };
    assert!(matches!(
        decide(&hit, &set, 0, &mut Sampler::new(&mut Draws(vec![0]))),
        Decision::Fault(_)
    ));
    for miss in [
        RequestView {
            method: "GET",
            ..hit
        },
        RequestView {
            path: "/items/x",
            ..hit
        },
        RequestView {
            headers: &[("x-user", "other")],
            ..hit
        },
        RequestView {
            headers: &[],
            ..hit
        },
    ] {
        assert_eq!(
            decide(&miss, &set, 0, &mut Sampler::new(&mut Draws(vec![]))),
            Decision::Pass,
            "{miss:?}"
        );
    }
}

#[test]
fn expired_rules_stop_at_the_server_expiry() {
    let set = set(vec![policy(json!({
        "metadata": {"name": "short"},
        "spec": {"rules": [{"fault": {"duration_seconds": 10, "abort": {"httpStatus": 503}}}]},
        "status": {"rules": [{"expires_at_ms": 1_000_000}]}
    }))]);
    assert!(matches!(
        decide(
            &get("/"),
            &set,
            999_999,
            &mut Sampler::new(&mut Draws(vec![0]))
        ),
        Decision::Fault(_)
    ));
    assert_eq!(
        decide(
            &get("/"),
            &set,
            1_000_000,
            &mut Sampler::new(&mut Draws(vec![]))
        ),
        Decision::Pass
    );
}

#[test]
fn selector_filters_and_names_order_policies() {
    let other_ns = policy(json!({
        "metadata": {"name": "a-elsewhere"},
        "spec": {"selector": {"namespace": "prod"}, "rules": [{"fault": {"abort": {"httpStatus": 500}}}]}
    }));
    let by_app = policy(json!({
        "metadata": {"name": "c-by-app"},
        "spec": {"selector": {"service": "reviews"}, "rules": [{"fault": {"abort": {"httpStatus": 502}}}]}
    }));
    let by_label = policy(json!({
        "metadata": {"name": "b-by-label"},
        "spec": {"selector": {"labels": {"app": "reviews"}}, "rules": [{"fault": {"abort": {"httpStatus": 501}}}]}
    }));
    let set = set(vec![other_ns, by_app, by_label]);
    let names: Vec<&str> = set.policies().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["b-by-label", "c-by-app"]);
    assert_eq!(set.revision(), 7);
    let Decision::Fault(plan) = decide(&get("/"), &set, 0, &mut Sampler::new(&mut Draws(vec![0])))
    else {
        panic!("expected a fault");
    };
    assert_eq!(set.abort(&plan).map(|a| a.status()), Some(501));
}

#[test]
fn policies_sort_by_name_stably_whatever_the_input_order() {
    let statuses = |set: &PolicySet| -> Vec<(String, u16)> {
        set.policies()
            .iter()
            .map(|p| {
                let status = p.rules()[0].fault().abort().map_or(0, |a| a.status());
                (p.name().to_owned(), status)
            })
            .collect()
    };
    let abort = |name: &str, status: u16| {
        policy(json!({
            "metadata": {"name": name},
            "spec": {"rules": [{"fault": {"abort": {"httpStatus": status}}}]}
        }))
    };
    let set = set(vec![
        abort("d", 500),
        abort("b", 501),
        abort("c", 502),
        abort("b", 503),
        abort("a", 504),
        abort("b", 505),
    ]);
    let expected = [
        ("a", 504),
        ("b", 501),
        ("b", 503),
        ("b", 505),
        ("c", 502),
        ("d", 500),
    ];
    assert_eq!(
        statuses(&set),
        expected.map(|(n, s)| (n.to_owned(), s)).to_vec()
    );
}

#[test]
fn plan_from_another_set_finds_nothing() {
    let plan = FaultPlan {
        policy: 3,
        rule: 0,
        start_delay_ms: 0,
        delay_ms: None,
        abort: true,
    };
    let set = set(vec![abort_policy("a", 100.0)]);
    assert!(set.policy(&plan).is_none());
    assert!(set.abort(&plan).is_none());
    let huge = FaultPlan {
        start_delay_ms: u64::MAX,
        delay_ms: Some(5),
        ..plan
    };
    assert_eq!(huge.hold_ms(), u64::MAX);
}

fn with_request_id(id: &str) -> [(&str, &str); 1] {
    [("x-request-id", id)]
}

fn sampled(set: &PolicySet, headers: &[(&str, &str)], rng: &mut impl Rng) -> bool {
    let request = RequestView {
        method: "GET",
        path: "/",
        headers,
    };
    matches!(
        decide(&request, set, 0, &mut Sampler::new(rng)),
        Decision::Fault(_)
    )
}

#[test]
fn request_sampling_gives_every_attempt_on_every_replica_the_same_answer() {
    let set = set(vec![abort_policy("reviews-abort", 50.0)]);
    // Two replicas with different random sources, three attempts each per request.
    let mut replicas = [SplitMix64::new(1), SplitMix64::new(2)];
    let mut faulted = 0;
    for n in 0..2_000 {
        let id = format!("6f1c2b7a-0d3e-4c5f-9a8b-{n:012x}");
        let headers = with_request_id(&id);
        let first = sampled(&set, &headers, &mut replicas[0]);
        for attempt in 1..3 {
            assert_eq!(sampled(&set, &headers, &mut replicas[attempt % 2]), first);
        }
        faulted += usize::from(first);
    }
    // 50 % of 2,000 within the 99.9 % binomial bound (3.29 sigma = 74).
    assert!((faulted as i64 - 1_000).abs() < 74, "{faulted}");
}

#[test]
fn attempt_sampling_and_requests_without_id_draw_at_random() {
    let attempt = set(vec![policy(json!({
        "metadata": {"name": "flaky"},
        "spec": {"sampling": "attempt",
                 "rules": [{"fault": {"percentage": 50, "abort": {"httpStatus": 503}}}]}
    }))]);
    let headers = with_request_id("6f1c2b7a-0d3e-4c5f-9a8b-000000000001");
    // The draws decide, whatever the id says.
    assert!(sampled(&attempt, &headers, &mut Draws(vec![0])));
    assert!(!sampled(&attempt, &headers, &mut Draws(vec![u64::MAX])));

    let by_request = set(vec![abort_policy("reviews-abort", 50.0)]);
    let mut draws = Draws(vec![0]);
    let mut sampler = Sampler::new(&mut draws);
    let decision = decide(&get("/"), &by_request, 0, &mut sampler);
    assert!(matches!(decision, Decision::Fault(_)));
    assert!(sampler.missing_request_id());
}

#[test]
fn zero_and_hundred_percent_need_no_draw() {
    // Draws(vec![]) panics on any draw.
    let always = set(vec![abort_policy("always", 100.0)]);
    let never = set(vec![abort_policy("never", 0.0)]);
    let mut sampler_draws = Draws(vec![]);
    let mut sampler = Sampler::new(&mut sampler_draws);
    assert!(matches!(
        decide(&get("/"), &always, 0, &mut sampler),
        Decision::Fault(_)
    ));
    assert_eq!(decide(&get("/"), &never, 0, &mut sampler), Decision::Pass);
    assert!(!sampler.missing_request_id());
}
