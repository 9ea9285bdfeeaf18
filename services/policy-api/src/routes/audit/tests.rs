use actix_web::http::header::{HeaderName, HeaderValue};

use super::*;

const NOW: u64 = 1_704_067_200_000;

fn fields(query: &str) -> Vec<&'static str> {
    parse_query(query, NOW)
        .unwrap_err()
        .into_iter()
        .map(|p| p.field)
        .collect()
}

#[test]
fn the_query_has_defaults_and_every_filter() {
    assert_eq!(parse_query("", NOW).unwrap(), AuditQuery::newest(100, NOW));
    let query = parse_query(
        "limit=5&continue=42&policy=reviews-abort&actor=alice&action=halt",
        NOW,
    )
    .unwrap();
    assert_eq!(query.limit, 5);
    assert_eq!(query.before, Some(42));
    assert_eq!(query.policy.as_deref(), Some("reviews-abort"));
    assert_eq!(query.actor.as_deref(), Some("alice"));
    assert_eq!(query.action, Some(AuditAction::Halt));
    assert_eq!(query.now_ms, NOW);
}

#[test]
fn every_bad_parameter_is_named() {
    assert_eq!(
        fields("limit=0&continue=x&policy=&actor=&action=halted"),
        ["limit", "continue", "policy", "actor", "action"]
    );
    assert_eq!(fields("limit=1001"), ["limit"]);
    assert_eq!(fields("continue=-1"), ["continue"]);
    assert_eq!(fields("continue=123456789012345678901"), ["continue"]);
    assert_eq!(fields(&format!("policy={}", "a".repeat(64))), ["policy"]);
    assert_eq!(fields(&format!("actor={}", "a".repeat(65))), ["actor"]);
    assert_eq!(fields("name=x"), ["query"], "unknown");
    assert_eq!(fields("limit=1&limit=2"), ["query"], "repeated");
}

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        map.append(
            HeaderName::from_static(REASON_HEADER),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    map
}

#[test]
fn the_reason_header_is_one_line_of_utf8_sent_once() {
    assert_eq!(header_reason(&headers(&[])).unwrap(), None);
    assert_eq!(
        header_reason(&headers(&["game day: é".as_bytes()])).unwrap(),
        Some("game day: é".to_owned())
    );
    let long = "x".repeat(513);
    for bad in [
        headers(&[b"a", b"b"]),
        headers(&[b"\xff\xfe"]),
        headers(&[long.as_bytes()]),
        headers(&[b"tab\there"]),
    ] {
        let err = header_reason(&bad).unwrap_err();
        match err {
            ApiError::Invalid { details, .. } => assert_eq!(details[0].field, "X-Boifi-Reason"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_log_line_names_everything_but_the_token_and_escapes_the_reason() {
    let by = Attribution::new("alice", Some("say \"hi\" é"), NOW).unwrap();
    assert_eq!(
        log_line(&by, AuditAction::Halt, None, 42),
        r#"audit actor=alice action=halt policy=- revision=42 reason="say \"hi\" é""#
    );
    let by = Attribution::new("anonymous", None, NOW).unwrap();
    assert_eq!(
        log_line(&by, AuditAction::Replace, Some("p"), 7),
        "audit actor=anonymous action=replace policy=p revision=7"
    );
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(rfc3339_ms(NOW + 5), "2024-01-01T00:00:00.005Z");
}
