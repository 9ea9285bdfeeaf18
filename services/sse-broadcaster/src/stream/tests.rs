use std::collections::BTreeMap;
use std::time::Instant;

use boifi_policy::wire::MAX_QUERY_LEN;
use prometheus::Registry;

use super::*;
use crate::metrics::Metrics;
use crate::model::{effective, Delta};
use crate::test_support::stored;

fn parse(query: &str, header: Option<&str>) -> Result<StreamRequest, Vec<FieldProblem>> {
    parse_request(query, header.map(str::as_bytes), &Settings::default())
}

fn fields(query: &str) -> Vec<&'static str> {
    parse(query, None)
        .unwrap_err()
        .into_iter()
        .map(|p| p.field)
        .collect()
}

#[test]
fn stream_requests() {
    assert_eq!(
        parse("", None).unwrap(),
        StreamRequest::Stream {
            filter: Filter::default(),
            resume: None
        }
    );
    let StreamRequest::Stream { filter, resume } = parse(
        "namespace=demo&service=reviews&labels=version:v2&last_event_id=7",
        None,
    )
    .unwrap() else {
        panic!("stream")
    };
    assert_eq!(filter.namespace.as_deref(), Some("demo"));
    assert_eq!(filter.service.as_deref(), Some("reviews"));
    assert_eq!(filter.labels.unwrap()["version"], "v2");
    assert_eq!(resume, Some(7));
    // The header is newer than the URL an EventSource was opened with.
    let StreamRequest::Stream { resume, .. } = parse("revision=7", Some("9")).unwrap() else {
        panic!("stream")
    };
    assert_eq!(resume, Some(9));
    // A header that is not a revision means "start over".
    let StreamRequest::Stream { resume, .. } = parse("mode=stream", Some("abc")).unwrap() else {
        panic!("stream")
    };
    assert_eq!(resume, None);
}

#[test]
fn poll_requests_bound_their_wait() {
    let settings = Settings::default();
    let StreamRequest::Poll { revision, wait, .. } = parse("mode=poll&revision=5", None).unwrap()
    else {
        panic!("poll")
    };
    assert_eq!((revision, wait), (Some(5), settings.poll_wait));
    let StreamRequest::Poll { wait, .. } = parse("mode=poll&wait_ms=250", None).unwrap() else {
        panic!("poll")
    };
    assert_eq!(wait, Duration::from_millis(250));
    let StreamRequest::Poll { wait, .. } = parse("mode=poll&wait_ms=99999999", None).unwrap()
    else {
        panic!("poll")
    };
    assert_eq!(wait, settings.poll_max_wait);
}

#[test]
fn bad_queries_name_every_field() {
    assert_eq!(
        fields("mode=push&revision=x&wait_ms=-1&labels=v2"),
        ["labels", "revision", "wait_ms", "mode"]
    );
    assert_eq!(fields("wait_ms=10"), ["wait_ms"]);
    assert_eq!(fields("revision=1&last_event_id=2"), ["revision"]);
    let unknown = parse("servce=reviews", None).unwrap_err();
    assert_eq!(unknown[0].field, "query");
    assert!(unknown[0].message.contains("servce"), "{unknown:?}");
    assert_eq!(fields("service=a&service=b"), ["query"]);
    assert_eq!(fields(&"a".repeat(MAX_QUERY_LEN + 1)), ["query"]);
}

/// The parser this crate had before the query moved into `boifi_policy::wire`, kept as an
/// oracle: actix's form decoding into a strict serde struct, then the same checks.
mod before {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawQuery {
        namespace: Option<String>,
        service: Option<String>,
        labels: Option<String>,
        mode: Option<String>,
        last_event_id: Option<String>,
        revision: Option<String>,
        wait_ms: Option<String>,
    }

    pub(super) fn parse_request(
        query: &str,
        last_event_id: Option<&[u8]>,
        settings: &Settings,
    ) -> Result<StreamRequest, Vec<FieldProblem>> {
        if query.len() > MAX_QUERY_LEN {
            return Err(vec![FieldProblem::new(
                "query",
                format!("longer than {MAX_QUERY_LEN} bytes"),
            )]);
        }
        let raw = web::Query::<RawQuery>::from_query(query)
            .map_err(|err| {
                let cause = match &err {
                    actix_web::error::QueryPayloadError::Deserialize(cause) => cause.to_string(),
                    other => other.to_string(),
                };
                vec![FieldProblem::new("query", cause)]
            })?
            .into_inner();
        let mut problems = Vec::new();
        let filter = Filter::parse(
            raw.namespace.as_deref(),
            raw.service.as_deref(),
            raw.labels.as_deref(),
        )
        .map_err(|found| problems.extend(found))
        .ok();
        let mut number = |field: &'static str, value: Option<String>| {
            let value = value?;
            match value.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    problems.push(FieldProblem::new(
                        field,
                        format!(
                            "expected a whole number, found `{}`",
                            value.escape_default()
                        ),
                    ));
                    None
                }
            }
        };
        let from_last_event_id = number("last_event_id", raw.last_event_id);
        let from_revision = number("revision", raw.revision);
        let wait_ms = number("wait_ms", raw.wait_ms);
        if let (Some(a), Some(b)) = (from_last_event_id, from_revision) {
            if a != b {
                problems.push(FieldProblem::new(
                    "revision",
                    "differs from last_event_id; give one of them",
                ));
            }
        }
        let header = last_event_id
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        let resume = header.or(from_last_event_id).or(from_revision);
        let poll = match raw.mode.as_deref() {
            None | Some("stream") => false,
            Some("poll") => true,
            Some(other) => {
                problems.push(FieldProblem::new(
                    "mode",
                    format!(
                        "expected `stream` or `poll`, found `{}`",
                        other.escape_default()
                    ),
                ));
                false
            }
        };
        if wait_ms.is_some() && !poll {
            problems.push(FieldProblem::new("wait_ms", "only allowed with mode=poll"));
        }
        let Some(filter) = filter.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        Ok(if poll {
            let wait = wait_ms.map_or(settings.poll_wait, Duration::from_millis);
            StreamRequest::Poll {
                filter,
                revision: resume,
                wait: wait.min(settings.poll_max_wait),
            }
        } else {
            StreamRequest::Stream { filter, resume }
        })
    }
}

#[test]
fn the_shared_parser_answers_as_the_old_one_did() {
    let settings = Settings::default();
    let long_label = format!("labels=k:{}", "v".repeat(400));
    let many_labels = format!(
        "labels={}",
        (0..70)
            .map(|i| format!("k{i}:v"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let too_long = format!("namespace={}", "n".repeat(MAX_QUERY_LEN));
    let queries = [
        "",
        "&",
        "&&namespace=demo&&",
        "namespace",
        "namespace=",
        "namespace=*&service=*",
        "namespace=demo&service=reviews&labels=app:reviews,version:v2",
        "mode=poll&wait_ms=30000&revision=42&namespace=demo%20ns&service=reviews&labels=app:reviews",
        "mode=poll&wait_ms=99999999999",
        "mode=poll&revision=5&last_event_id=5",
        "revision=5&last_event_id=6",
        "mode=stream&wait_ms=1",
        "mode=push&revision=x&wait_ms=-1&labels=v2",
        "mode=Poll",
        "mode=p%0Aoll",
        "servce=x",
        "mode=push&servce=x",
        "Namespace=demo",
        "na%6Despace=demo",
        "namespace=a+b%2Bc%zz%4",
        "namespace=%ff%fe",
        "namespace=%00",
        "service=a&service=b",
        "service=a&servce=b&service=c",
        "labels=",
        "labels=:v",
        "labels=a:1,a:2",
        "labels=a:1,,b:2",
        "labels=a%3A1%2Cb%3A2",
        "namespace=a=b=c",
        "=x",
        "revision=%2B5",
        "revision=+5",
        "revision=18446744073709551616",
        "last_event_id=007",
        long_label.as_str(),
        many_labels.as_str(),
        too_long.as_str(),
    ];
    for query in queries {
        for header in [None, Some(&b"9"[..]), Some(&b" 12 "[..]), Some(&b"x"[..])] {
            assert_eq!(
                parse_request(query, header, &settings),
                before::parse_request(query, header, &settings),
                "{query:?} with Last-Event-ID {header:?}"
            );
        }
    }
}

fn loaded_hub(client_buffer: usize) -> Arc<Hub> {
    let hub = Arc::new(Hub::new(
        Settings {
            client_buffer,
            ..Settings::default()
        },
        Metrics::new(Registry::new()).unwrap(),
    ));
    hub.commit(
        1,
        false,
        Arc::new(BTreeMap::new()),
        vec![],
        true,
        Instant::now(),
    );
    hub
}

fn change(hub: &Hub, revision: u64) {
    let view = Arc::new(effective(&stored("a", "reviews", revision), 0).unwrap());
    let delta = Delta::Policy {
        name: "a".into(),
        new: Some(view),
        old: None,
    };
    hub.commit(
        revision,
        false,
        Arc::new(BTreeMap::new()),
        vec![delta],
        false,
        Instant::now(),
    );
}

fn client(hub: &Arc<Hub>, resume: Option<u64>) -> Client {
    let filter = Arc::new(Filter::default());
    let start = hub.open_stream(&filter, resume).unwrap();
    Client {
        hub: hub.clone(),
        filter,
        backlog: start
            .frames
            .into_iter()
            .map(|(k, f)| (Some(k), f))
            .collect(),
        items: start.items,
        finished: false,
        _subscription: start.subscription,
        _guard: hub.admit(Mode::Stream).unwrap(),
    }
}

async fn frame(client: &mut Client) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), client.next_frame())
        .await
        .expect("a frame or the end within the deadline")
        .map(|bytes| String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn a_client_gets_its_start_then_live_events_and_pings() {
    let hub = loaded_hub(16);
    let mut client = client(&hub, None);
    assert!(frame(&mut client)
        .await
        .unwrap()
        .starts_with("id: 1\nevent: snapshot\n"));
    change(&hub, 2);
    hub.ping();
    assert!(frame(&mut client)
        .await
        .unwrap()
        .starts_with("id: 2\nevent: policy\n"));
    assert_eq!(frame(&mut client).await.unwrap(), ": ping\n\n");
    assert_eq!(hub.metrics.fanout_seconds.get_sample_count(), 1);
    hub.shut_down();
    assert_eq!(frame(&mut client).await, None);
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_resync_and_ends() {
    let hub = loaded_hub(2);
    let mut client = client(&hub, Some(1));
    for revision in 2..=5 {
        change(&hub, revision);
    }
    // What fit in its queue, then resync (no `id:`: it resumes after revision 3).
    for revision in [2, 3] {
        let text = frame(&mut client).await.unwrap();
        assert!(text.starts_with(&format!("id: {revision}\n")), "{text}");
    }
    assert_eq!(
        frame(&mut client).await.unwrap(),
        "event: resync\ndata: {\"reason\":\"lagged\"}\n\n"
    );
    assert_eq!(frame(&mut client).await, None);
    assert_eq!(hub.metrics.clients_cut_off.get(), 1);
    assert_eq!(hub.metrics.clients(Mode::Stream).get(), 1);
    drop(client);
    assert_eq!(hub.metrics.clients(Mode::Stream).get(), 0);
}

#[tokio::test]
async fn a_dropped_client_still_counts_for_fanout() {
    let hub = loaded_hub(16);
    let taker = client(&hub, Some(1));
    let mut reader = client(&hub, Some(1));
    change(&hub, 2);
    assert!(frame(&mut reader).await.unwrap().starts_with("id: 2\n"));
    assert_eq!(hub.metrics.fanout_seconds.get_sample_count(), 0);
    drop(taker);
    assert_eq!(hub.metrics.fanout_seconds.get_sample_count(), 1);
}
