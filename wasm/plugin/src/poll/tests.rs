use std::collections::BTreeMap;

use super::*;
use crate::config;
use crate::rng::SplitMix64;

fn cfg() -> PluginConfig {
    config::parse(Some(
        br#"{"broadcaster_cluster":"c","broadcaster_authority":"a","poll_wait_ms":10000,
             "poll_timeout_margin_ms":2000,"backoff_min_ms":100,"backoff_max_ms":1600}"#,
    ))
    .expect("valid")
    .config
}

fn workload(name: &str, app: Option<&str>) -> Workload {
    Workload {
        namespace: "demo ns".into(),
        name: name.into(),
        labels: app
            .map(|a| BTreeMap::from([("app".to_owned(), a.to_owned())]))
            .unwrap_or_default(),
    }
}

const POLICY: &str =
    r#"{"metadata":{"name":"p1"},"spec":{"rules":[{"fault":{"abort":{"httpStatus":503}}}]}}"#;

fn snapshot_body(revision: u64, halted: bool, policies: &[&str]) -> String {
    format!(
        ": long poll\nevent: snapshot\nid: {revision}\ndata: {{\"revision\":{revision},\"halted\":{halted},\"policies\":[{}]}}\n\n",
        policies.join(",")
    )
}

fn poller(now: u64) -> Poller {
    Poller::new(&cfg(), now, &workload("reviews", Some("reviews")), true)
}

#[test]
fn first_poll_is_due_at_once_and_asks_for_a_snapshot() {
    let poller = poller(1_000);
    assert!(poller.is_due(1_000));
    let req = poller.request();
    assert_eq!(
        req.path,
        "/v1/config/stream?mode=poll&wait_ms=10000&namespace=demo%20ns&service=reviews&labels=app:reviews"
    );
    assert_eq!(req.timeout_ms, 12_000);
}

#[test]
fn filter_leaves_out_what_is_uncertain() {
    let labels_unknown = Poller::new(&cfg(), 0, &workload("reviews-v2", Some("reviews")), false);
    assert_eq!(
        labels_unknown.request().path,
        "/v1/config/stream?mode=poll&wait_ms=10000&namespace=demo%20ns"
    );
    let no_labels = Poller::new(&cfg(), 0, &workload("ratings", None), true);
    assert!(no_labels
        .request()
        .path
        .ends_with("&namespace=demo%20ns&service=ratings"));
    let mut odd = workload("x", Some("a,b"));
    odd.labels.insert("k".into(), "v".into());
    let odd_labels = Poller::new(&cfg(), 0, &odd, true);
    assert!(!odd_labels.request().path.contains("service="));
    let nobody = Poller::new(&cfg(), 0, &Workload::default(), true);
    assert_eq!(
        nobody.request().path,
        "/v1/config/stream?mode=poll&wait_ms=10000"
    );
}

#[test]
fn snapshot_then_poll_from_its_revision() {
    let mut rng = SplitMix64::new(1);
    let mut poller = poller(0);
    poller.sent(9, 0);
    assert!(poller.owns(9) && !poller.owns(8));
    assert!(!poller.is_due(5));
    let body = snapshot_body(42, false, &[POLICY]);
    let outcome = poller.on_response(20, Some("200"), body.as_bytes(), &mut rng);
    let Ok(PollOutcome::Snapshot(snapshot)) = outcome else {
        panic!("expected a snapshot: {outcome:?}");
    };
    assert_eq!((snapshot.revision, snapshot.halted), (42, false));
    assert_eq!(snapshot.policies.len(), 1);
    assert_eq!(snapshot.policies[0].as_ref().map(|p| p.name()), Ok("p1"));
    assert_eq!(poller.revision(), Some(42));
    assert!(
        poller.is_due(20),
        "a snapshot is followed by the next poll at once"
    );
    assert!(poller.request().path.contains("&revision=42"));
}

#[test]
fn timeout_answer_keeps_revision_and_repolls() {
    let mut rng = SplitMix64::new(1);
    let mut poller = poller(0);
    poller.sent(1, 0);
    let _ = poller.on_response(
        5,
        Some("200"),
        snapshot_body(3, false, &[]).as_bytes(),
        &mut rng,
    );
    poller.sent(2, 5);
    let outcome = poller.on_response(10_005, Some("200"), b": timeout\nid: 3\n\n", &mut rng);
    assert!(matches!(outcome, Ok(PollOutcome::Unchanged)), "{outcome:?}");
    assert_eq!(poller.revision(), Some(3));
    assert!(
        poller.is_due(10_005),
        "a full wait is followed by the next poll at once"
    );
    // An unchanged answer long before the wait ends: pace by the minimum backoff.
    poller.sent(3, 20_000);
    let _ = poller.on_response(20_010, Some("200"), b"id: 3\n\n", &mut rng);
    assert!(!poller.is_due(20_109));
    assert!(poller.is_due(20_110));
    assert_eq!(poller.failures(), 0);
}

#[test]
fn failures_back_off_with_jitter_and_reset_on_success() {
    let mut rng = SplitMix64::new(7);
    let mut poller = poller(0);
    let mut now = 0;
    let mut waits = Vec::new();
    for (i, status) in [None, Some("503"), None, None, None, None]
        .into_iter()
        .enumerate()
    {
        poller.sent(i as u32, now);
        let err = poller
            .on_response(now, status, b"", &mut rng)
            .expect_err("failure");
        assert!(matches!(
            err,
            FetchError::NoResponse | FetchError::Status(_)
        ));
        let wait = poller.wake_at_ms() - now;
        waits.push(wait);
        now += wait;
    }
    // Capped exponential: 100, 200, 400, 800, 1600, 1600; each jittered into [cap/2, cap].
    for (wait, cap) in waits.iter().zip([100, 200, 400, 800, 1600, 1600]) {
        assert!((cap / 2..=cap).contains(wait), "{waits:?}");
    }
    assert_eq!(poller.failures(), 6);
    poller.sent(99, now);
    poller
        .on_response(now, Some("200"), b": nothing\n\n", &mut rng)
        .expect("success");
    assert_eq!(poller.failures(), 0);
}

#[test]
fn jitter_spreads_sidecars() {
    // Many sidecars failing at the same moment must not all retry at the same moment.
    let waits: std::collections::BTreeSet<u64> = (0..100)
        .map(|seed| backoff_ms(4, 100, 30_000, &mut SplitMix64::new(seed)))
        .collect();
    assert!(waits.len() > 50, "{} distinct waits", waits.len());
    assert!(waits.iter().all(|w| (400..=800).contains(w)));
    // Huge failure counts do not overflow.
    assert_eq!(backoff_ms(u32::MAX, 1, 1, &mut SplitMix64::new(0)), 1);
}

#[test]
fn lost_poll_is_abandoned_after_its_deadline() {
    let mut rng = SplitMix64::new(3);
    let mut poller = poller(0);
    poller.sent(5, 1_000);
    assert_eq!(poller.wake_at_ms(), 1_000 + 12_000 + 1_000);
    assert!(poller.abandon_if_stuck(13_999, &mut rng).is_none());
    assert_eq!(
        poller.abandon_if_stuck(14_000, &mut rng),
        Some(FetchError::Stuck(13_000))
    );
    assert!(
        !poller.owns(5),
        "a late answer to the abandoned poll is ignored"
    );
    assert_eq!(poller.failures(), 1);
}

#[test]
fn bad_bodies_are_errors_and_bad_policies_are_skipped() {
    let mut rng = SplitMix64::new(3);
    let mut poller = poller(0);
    for body in [
        &b"event: snapshot\ndata: {not json\n\n"[..],
        b"event: snapshot\ndata: {\"halted\":true}\n\n",
        &[0xff, 0xfe],
    ] {
        poller.sent(1, 0);
        let err = poller
            .on_response(0, Some("200"), body, &mut rng)
            .expect_err("bad");
        assert!(matches!(err, FetchError::Parse(_)), "{err}");
    }
    assert_eq!(poller.revision(), None);
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(
        interpret(Some("200"), &big).unwrap_err(),
        FetchError::TooLarge(MAX_BODY_BYTES + 1)
    );

    let invalid =
        r#"{"metadata":{"name":"bad"},"spec":{"rules":[{"fault":{"abort":{"httpStatus":42}}}]}}"#;
    let untyped = r#"{"metadata":{"name":7}}"#;
    let body = snapshot_body(8, true, &[invalid, POLICY, untyped]);
    poller.sent(2, 0);
    let Ok(PollOutcome::Snapshot(s)) =
        poller.on_response(0, Some("200"), body.as_bytes(), &mut rng)
    else {
        panic!("the snapshot itself is fine");
    };
    assert!(s.halted);
    assert_eq!(s.policies.len(), 3);
    let err = s.policies[0].as_ref().expect_err("invalid status");
    assert_eq!(err.policy, "bad");
    assert!(err.message.contains("httpStatus"), "{}", err.message);
    assert!(s.policies[1].is_ok());
    assert_eq!(
        s.policies[2].as_ref().expect_err("wrong type").policy,
        "policies[2]"
    );
}

#[test]
fn too_many_policies_are_cut() {
    let policies = vec![POLICY; MAX_POLICIES + 2];
    let data = format!(
        "{{\"revision\":1,\"halted\":false,\"policies\":[{}]}}",
        policies.join(",")
    );
    let s = parse_snapshot(data).expect("parses");
    assert_eq!(
        s.policies.iter().filter(|p| p.is_ok()).count(),
        MAX_POLICIES
    );
    assert_eq!(s.policies.len(), MAX_POLICIES + 2);
}

/// What a body that may be broken must lead to: an error (the caller keeps its set), an
/// unchanged answer, or a snapshot whose unusable policies each say which and why.
fn assert_handled(body: &[u8]) -> Result<PollOutcome, FetchError> {
    let outcome = interpret(Some("200"), body);
    match &outcome {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(PollOutcome::Unchanged) => {}
        Ok(PollOutcome::Snapshot(s)) => {
            for bad in s.policies.iter().filter_map(|p| p.as_ref().err()) {
                assert!(!bad.policy.is_empty() && !bad.message.is_empty(), "{bad:?}");
            }
        }
    }
    outcome
}

#[test]
fn truncated_bodies_fail_or_say_unchanged_and_keep_the_set() {
    let body = snapshot_body(9, false, &[POLICY, POLICY]);
    let data_end = body.rfind('}').expect("data ends with an object") + 1;
    let mut rng = SplitMix64::new(5);
    for len in 0..body.len() {
        let cut = &body.as_bytes()[..len];
        match assert_handled(cut) {
            // A cut inside the data leaves JSON that cannot parse.
            Err(e) => assert!(matches!(e, FetchError::Parse(_)), "{len}: {e}"),
            Ok(PollOutcome::Unchanged) => {
                assert!(!body[..len].contains("data:"), "{len}: data was dropped")
            }
            Ok(PollOutcome::Snapshot(s)) => {
                assert!(len >= data_end, "{len}: snapshot from a cut data line");
                assert_eq!(s.revision, 9);
                assert!(s.policies.iter().all(Result::is_ok));
            }
        }
    }
    // Through the poller: a cut body is a failure, and the revision stays for the next poll.
    let mut poller = poller(0);
    poller.sent(1, 0);
    poller
        .on_response(0, Some("200"), body.as_bytes(), &mut rng)
        .expect("complete body");
    poller.sent(2, 0);
    let cut = &body.as_bytes()[..data_end - 1];
    assert!(poller.on_response(0, Some("200"), cut, &mut rng).is_err());
    assert_eq!(poller.revision(), Some(9));
    assert_eq!(poller.failures(), 1);
}

#[test]
fn mutated_bodies_never_panic() {
    let body = snapshot_body(
        3,
        true,
        &[
            POLICY,
            r#"{"metadata":{"name":"p2"},"spec":{"selector":{"labels":{"a":"b"}},"rules":[{"match":{"path":{"regex":"/x/[0-9]+"},"headers":[{"name":"x-u","exact":"t"}]},"fault":{"percentage":50,"delay":{"fixed_delay_ms":10}}}]}}"#,
        ],
    );
    let (mut errors, mut snapshots) = (0, 0);
    for mutant in crate::test_support::mutants(body.as_bytes(), 11, 3_000) {
        match assert_handled(&mutant) {
            Err(_) => errors += 1,
            Ok(PollOutcome::Snapshot(_)) => snapshots += 1,
            Ok(PollOutcome::Unchanged) => {}
        }
    }
    assert!(
        errors > 500 && snapshots > 200,
        "{errors} errors, {snapshots} snapshots"
    );
}

#[test]
fn hostile_snapshots_are_errors_or_skipped_policies() {
    let deep = crate::test_support::nested(10_000);
    // The snapshot itself too deep, or numbers no revision can hold: the whole body fails.
    for data in [
        deep.clone(),
        format!("{{\"revision\":{deep}}}"),
        "{\"revision\":18446744073709551616}".to_owned(),
        "{\"revision\":-1}".to_owned(),
        "{\"revision\":1e309}".to_owned(),
        "{\"revision\":1,\"halted\":\"yes\"}".to_owned(),
        "{\"revision\":1,\"policies\":{}}".to_owned(),
    ] {
        let body = format!("event: snapshot\ndata: {data}\n\n");
        let err = assert_handled(body.as_bytes()).expect_err(&data[..data.len().min(40)]);
        assert!(matches!(err, FetchError::Parse(_)), "{err}");
    }
    // One policy too deep or too long: only that policy is skipped.
    let long_name = POLICY.replace("\"p1\"", &format!("\"{}\"", "p".repeat(100_000)));
    let body = snapshot_body(4, false, &[&deep, POLICY, &long_name, "\"\\u0000\""]);
    let Ok(PollOutcome::Snapshot(s)) = assert_handled(body.as_bytes()) else {
        panic!("the snapshot itself is fine");
    };
    let ok: Vec<bool> = s.policies.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [false, true, false, false]);
}

#[test]
fn bodies_at_the_size_limit() {
    let snapshot = snapshot_body(2, false, &[POLICY]);
    // Padded with an SSE comment to exactly the limit: still read.
    let pad = MAX_BODY_BYTES - snapshot.len() - 2;
    let body = format!(":{}\n{snapshot}", "x".repeat(pad));
    assert_eq!(body.len(), MAX_BODY_BYTES);
    assert!(matches!(
        assert_handled(body.as_bytes()),
        Ok(PollOutcome::Snapshot(_))
    ));
    // One byte more: refused before it is read.
    let body = format!(":{}\n{snapshot}", "x".repeat(pad + 1));
    assert_eq!(
        assert_handled(body.as_bytes()).unwrap_err(),
        FetchError::TooLarge(MAX_BODY_BYTES + 1)
    );
    // Under the limit but made of many tiny lines and events: no snapshot, no error.
    let lines = "data: x\n\nevent: other\n:\n".repeat(MAX_BODY_BYTES / 64);
    assert!(matches!(
        assert_handled(lines.as_bytes()),
        Ok(PollOutcome::Unchanged)
    ));
    // Data split over very many lines is joined, then rejected as JSON.
    let body = format!("event: snapshot\n{}\n", "data: [\n".repeat(100_000));
    assert!(matches!(
        assert_handled(body.as_bytes()),
        Err(FetchError::Parse(_))
    ));
}

#[test]
fn status_and_utf8_garbage_are_errors() {
    let long_status = "9".repeat(10_000);
    for status in [
        None,
        Some(""),
        Some("20"),
        Some("2000"),
        Some(long_status.as_str()),
    ] {
        let err = interpret(status, b"").expect_err("not 200");
        assert!(err.to_string().len() < 64, "{err}");
    }
    let mut body = snapshot_body(1, false, &[POLICY]).into_bytes();
    body.insert(30, 0xc3);
    assert_eq!(
        interpret(Some("200"), &body).unwrap_err(),
        FetchError::Parse("not UTF-8".into())
    );
}

#[test]
fn an_adopted_revision_is_polled_from() {
    let mut poller = poller(0);
    assert!(!poller.request().path.contains("&revision="));
    poller.adopt(17);
    assert_eq!(poller.revision(), Some(17));
    assert!(poller.request().path.contains("&revision=17"));
}
