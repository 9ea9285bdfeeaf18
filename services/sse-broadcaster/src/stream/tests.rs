use std::collections::BTreeMap;
use std::time::Instant;

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
    let start = hub.open_stream(&Filter::default(), resume).unwrap();
    Client {
        hub: hub.clone(),
        filter: Filter::default(),
        backlog: start
            .frames
            .into_iter()
            .map(|(k, f)| (Some(k), f))
            .collect(),
        ring: start.ring,
        covered_seq: start.covered_seq,
        shutdown: hub.shutdown_signal(),
        finished: false,
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
