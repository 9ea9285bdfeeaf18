//! Broadcaster replicas behind one Service: each `sse-broadcaster` process watches the same etcd
//! itself, and event ids are store revisions, so a client that moves from one replica to
//! another (its connection was balanced elsewhere, or its replica went away) resumes there with
//! the `Last-Event-ID` (or poll `revision`) the first one gave it: no gap, no duplicate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boifi_tests::http::{call, request, Block, Response};
use boifi_tests::mesh::{Broadcasters, ControlPlane, ControlPlaneKind};
use boifi_tests::wait_until;
use serde_json::{json, Value};

const FILTER: &str = "namespace=demo&service=reviews";

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn policy(name: &str, service: &str) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "namespace": "demo", "service": service },
            "rules": [ { "fault": { "abort": { "httpStatus": 503 } } } ]
        }
    })
}

fn put(plane: &ControlPlane, name: &str, service: &str) -> u64 {
    plane.put_policy(&policy(name, service)).unwrap().revision
}

/// Waits until the broadcaster at `addr` serves `revision` (a write returns before every
/// replica's watch has delivered it).
fn wait_at(addr: SocketAddr, revision: u64) {
    let at = wait_until(deadline(), || {
        call(addr, "GET", "/v1/ready", None, deadline()).is_ok_and(|(status, body)| {
            status == 200
                && serde_json::from_str::<Value>(&body)
                    .is_ok_and(|v| v["revision"].as_u64() >= Some(revision))
        })
    });
    assert!(at, "{addr} at revision {revision} within the deadline");
}

fn open(addr: SocketAddr, last_event_id: Option<u64>) -> Response {
    let id = last_event_id.map(|id| id.to_string());
    let headers: Vec<(&str, &str)> = id.iter().map(|id| ("Last-Event-ID", id.as_str())).collect();
    let path = format!("/v1/config/stream?{FILTER}");
    let response = request(addr, "GET", &path, &headers, None, deadline()).expect("open stream");
    assert_eq!(response.status, 200);
    response
}

fn next(stream: &mut Response) -> Block {
    stream
        .next_event(deadline())
        .expect("read the stream")
        .expect("the stream is open")
}

#[test]
fn a_client_resumes_on_another_replica_without_gap_or_duplicate() {
    let two = Broadcasters {
        replicas: 2,
        ..Broadcasters::default()
    };
    let plane = ControlPlane::start_with(ControlPlaneKind::Separate, None, two).unwrap();
    let [first, second] = plane.stream_addrs()[..] else {
        panic!("two broadcaster replicas");
    };

    // On the first replica, a stream client is current at r1.
    let r1 = put(&plane, "a", "reviews");
    wait_at(first, r1);
    let mut stream = open(first, None);
    let snapshot = next(&mut stream);
    assert_eq!((snapshot.name(), snapshot.revision()), ("snapshot", r1));
    drop(stream);

    // While it moves: a change for it, one for others, a delete.
    let r2 = put(&plane, "b", "reviews");
    let r3 = put(&plane, "c", "ratings");
    assert!(plane.delete_policy("a").unwrap());
    let r4 = put(&plane, "marker", "details");
    wait_at(second, r4);

    // On the second replica, with the first one's id: exactly what it missed.
    let mut resumed = open(second, Some(r1));
    let b = next(&mut resumed);
    assert_eq!(b.summary(), ("policy".into(), r2, "b".into()));
    let deleted = next(&mut resumed);
    assert_eq!(
        (deleted.name(), deleted.json()["name"].as_str()),
        ("delete", Some("a"))
    );
    assert!(r3 < deleted.revision() && deleted.revision() < r4);
    // Nothing else was queued: the next event is the next change.
    let r5 = put(&plane, "d", "reviews");
    assert_eq!(
        next(&mut resumed).summary(),
        ("policy".into(), r5, "d".into())
    );

    // A long poll current at r5 on the first replica is current on the second too: held
    // until its wait ends, then told it is current at the latest revision.
    wait_at(first, r5);
    let query = format!("/v1/config/stream?mode=poll&wait_ms=300&revision={r5}&{FILTER}");
    let (status, body) = call(second, "GET", &query, None, deadline()).unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, format!(": timeout\nid: {r5}\n\n").as_str())
    );
    // And answered by the second replica when a change concerns it.
    let r6 = put(&plane, "e", "reviews");
    wait_at(second, r6);
    let (status, body) = call(second, "GET", &query, None, deadline()).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.starts_with(&format!("id: {r6}\nevent: snapshot\n")),
        "{body}"
    );
}
