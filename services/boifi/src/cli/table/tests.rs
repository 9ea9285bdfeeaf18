use boifi_policy::{PolicyStatus, RuleStatus};
use serde_json::json;

use super::*;

fn policy(value: serde_json::Value) -> Policy {
    serde_json::from_value(value).expect("a policy")
}

const NOW: u64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

fn example() -> Policy {
    policy(json!({
        "metadata": {"name": "reviews-abort", "version": "1.0.0"},
        "spec": {
            "selector": {"namespace": "demo", "service": "reviews", "labels": {"version": "v2", "app": "r"}},
            "rules": [
                {"fault": {"percentage": 50, "delay": {"fixed_delay_ms": 200}, "abort": {"httpStatus": 503}}},
                {"fault": {"start_delay_ms": 100, "abort": {"grpcStatus": "UNAVAILABLE"}}}
            ]
        },
        "status": {
            "revision": 42, "created_at_ms": NOW - 330_000, "updated_at_ms": NOW - 5_000,
            "rules": [
                {"expires_at_ms": NOW + 300_000, "expired": false},
                {"expires_at_ms": NOW + 60_000, "expired": false}
            ]
        }
    }))
}

#[test]
fn columns_are_aligned_and_the_last_is_not_padded() {
    let rows = vec![
        vec!["a".to_owned(), "x".to_owned(), "last".to_owned()],
        vec!["longer-name".to_owned(), "yy".to_owned(), "z".to_owned()],
    ];
    assert_eq!(
        render(&["NAME", "SELECTOR", "END"], &rows),
        "NAME          SELECTOR   END\n\
         a             x          last\n\
         longer-name   yy         z\n"
    );
    assert_eq!(render(&["NAME", "AGE"], &[]), "NAME   AGE\n");
    // Width counts characters, not bytes.
    let rows = vec![vec!["é".to_owned(), "1".to_owned()]];
    assert_eq!(render(&["N", "X"], &rows), "N   X\né   1\n");
}

#[test]
fn a_row_shows_the_policy_at_a_glance() {
    assert_eq!(
        row(&example(), NOW, false),
        [
            "reviews-abort",
            "demo/reviews{app=r,version=v2}",
            "2",
            "42",
            "5m30s",
            "active until 2024-05-01T12:05:00Z"
        ]
    );
    assert_eq!(
        row(&example(), NOW, true),
        [
            "reviews-abort",
            "demo/reviews{app=r,version=v2}",
            "2",
            "42",
            "5m30s",
            "1.0.0",
            "5s",
            "50%:delay=200ms,abort=503;after=100ms,abort=UNAVAILABLE",
            "active until 2024-05-01T12:05:00Z"
        ]
    );
    assert_eq!(row(&example(), NOW, true).len(), WIDE_HEADERS.len());
    assert_eq!(row(&example(), NOW, false).len(), HEADERS.len());
}

#[test]
fn selectors_show_any_as_a_star() {
    let any = Selector::default();
    assert_eq!(selector(&any), "*/*");
    let s = Selector {
        namespace: Some("*".into()),
        service: Some("".into()),
        ..Selector::default()
    };
    assert_eq!(selector(&s), "*/*");
    let s = Selector {
        service: Some("ratings".into()),
        ..Selector::default()
    };
    assert_eq!(selector(&s), "*/ratings");
}

#[test]
fn ages_read_like_kubectl() {
    let cases = [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (600, "10m"),
        (42 * 60 + 59, "42m"),
        (3 * 3600 + 600, "3h10m"),
        (5 * 3600, "5h"),
        (30 * 3600, "30h"),
        (3 * 86_400 + 4 * 3600, "3d4h"),
        (4 * 86_400, "4d"),
        (120 * 86_400, "120d"),
    ];
    for (secs, shown) in cases {
        assert_eq!(age(NOW, NOW - secs * 1000), shown, "{secs} s");
    }
    assert_eq!(age(NOW, 0), "-", "unknown");
    assert_eq!(age(NOW, NOW + 5000), "0s", "a server clock ahead of ours");
}

#[test]
fn expiry_states() {
    let mut p = example();
    assert_eq!(expiry(&p), "active until 2024-05-01T12:05:00Z");

    let status = p.status.as_mut().unwrap();
    status.rules[0].expires_at_ms = None;
    assert_eq!(expiry(&p), "never", "one rule runs until deleted");

    let status = p.status.as_mut().unwrap();
    status.rules = vec![
        RuleStatus {
            expires_at_ms: Some(NOW - 1),
            expires_at: None,
            expired: true,
        };
        2
    ];
    assert_eq!(expiry(&p), "expired");

    p.status = Some(PolicyStatus::default());
    assert_eq!(expiry(&p), "never", "no rules");
    p.status = None;
    assert_eq!(expiry(&p), "never");
}

#[test]
fn fault_summaries() {
    let p = example();
    assert_eq!(fault(&p.spec.rules[0].fault), "50%:delay=200ms,abort=503");
    assert_eq!(
        fault(&p.spec.rules[1].fault),
        "after=100ms,abort=UNAVAILABLE"
    );
    let f = policy(json!({"metadata": {"name": "x"}, "spec": {"rules": [
        {"fault": {"percentage": 0.5, "delay": {"fixed_delay_ms": 5}}}
    ]}}));
    assert_eq!(fault(&f.spec.rules[0].fault), "0.5%:delay=5ms");
}
