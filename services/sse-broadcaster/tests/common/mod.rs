//! Stream helpers of the end-to-end tests; the services they run against (policy-api and the
//! broadcaster on one store, in-process) and the HTTP clients come from boifi-tests.

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use boifi_tests::http::{request, Block, Response};
use boifi_tests::services::{deadline, Services, State};

/// A policy for `namespace`/`service` with one abort rule, running for `duration_seconds`
/// (0: until deleted).
pub fn policy(name: &str, service: &str, duration_seconds: u64) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "namespace": "demo", "service": service },
            "rules": [ { "fault": { "duration_seconds": duration_seconds, "abort": { "httpStatus": 503 } } } ]
        }
    })
}

/// Opens `/v1/config/stream?{query}`, optionally with `Last-Event-ID`.
pub fn open_stream(addr: SocketAddr, query: &str, last_event_id: Option<u64>) -> Response {
    let id = last_event_id.map(|id| id.to_string());
    let headers: Vec<(&str, &str)> = id.iter().map(|id| ("Last-Event-ID", id.as_str())).collect();
    let response = request(
        addr,
        "GET",
        &format!("/v1/config/stream?{query}"),
        &headers,
        None,
        deadline(),
    )
    .expect("open stream");
    assert_eq!(response.status, 200, "stream status");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    response
}

pub fn next_event(stream: &mut Response) -> Block {
    stream
        .next_event(deadline())
        .expect("read the stream")
        .expect("the stream is open")
}

/// A stream client that reconnects with `Last-Event-ID` whenever its stream ends, as an
/// `EventSource` does.
pub struct Follower {
    addr: SocketAddr,
    query: String,
    stream: Option<Response>,
    pub state: State,
    pub connections: usize,
}

impl Follower {
    pub fn new(addr: SocketAddr, query: &str) -> Follower {
        Follower {
            addr,
            query: query.to_owned(),
            stream: None,
            state: State::default(),
            connections: 0,
        }
    }

    /// Reads and applies events until `condition` holds (true) or `deadline` passes (false).
    pub fn until(&mut self, deadline: Instant, mut condition: impl FnMut(&State) -> bool) -> bool {
        loop {
            if condition(&self.state) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let Some(stream) = self.stream.as_mut() else {
                let id = self.state.revision.map(|id| id.to_string());
                let headers: Vec<(&str, &str)> =
                    id.iter().map(|id| ("Last-Event-ID", id.as_str())).collect();
                let path = format!("/v1/config/stream?{}", self.query);
                match request(self.addr, "GET", &path, &headers, None, deadline) {
                    Ok(response) if response.status == 200 => {
                        self.connections += 1;
                        self.stream = Some(response);
                    }
                    // Down or not ready yet: try again shortly, as EventSource does.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
                continue;
            };
            match stream.next_block(deadline) {
                Ok(Some(block)) => {
                    if block.name() == "resync" {
                        self.stream = None;
                    } else {
                        self.state.apply(&block);
                    }
                }
                Ok(None) => self.stream = None,
                Err(_) => self.stream = None,
            }
        }
    }
}

/// A change made through policy-api reaches a connected stream client, in revision order, and
/// a client filtered to another service gets only what concerns it.
pub fn scenario_changes_reach_filtered_clients(services: &Services) {
    let addr = services.broadcaster();
    let mut reviews = open_stream(addr, "namespace=demo&service=reviews", None);
    let mut ratings = open_stream(addr, "namespace=demo&service=ratings", None);
    let start = next_event(&mut reviews);
    assert_eq!(start.name(), "snapshot");
    assert_eq!(start.json()["policies"], json!([]));
    assert_eq!(next_event(&mut ratings).name(), "snapshot");

    let r1 = services.put(&policy("p1", "reviews", 0));
    let r2 = services.put(&policy("p2", "reviews", 0));
    // p1 moves to ratings: deleted for reviews clients, new for ratings clients.
    let r3 = services.put(&policy("p1", "ratings", 0));
    services.delete("p2");
    services.set_halt(true);
    let r5 = services.expected().revision.unwrap();
    assert!(r1 < r2 && r2 < r3 && r3 < r5);

    let got: Vec<_> = (0..5).map(|_| next_event(&mut reviews).summary()).collect();
    let r4 = got[3].1;
    let s = |e: &str, r: u64, w: &str| (e.to_owned(), r, w.to_owned());
    assert_eq!(
        got,
        [
            s("policy", r1, "p1"),
            s("policy", r2, "p2"),
            s("delete", r3, "p1"),
            s("delete", r4, "p2"),
            s("halt", r5, "true"),
        ]
    );
    assert!(r3 < r4 && r4 < r5);
    // The ratings client saw nothing of p2 or of p1 while it selected reviews.
    let got: Vec<_> = (0..2).map(|_| next_event(&mut ratings).summary()).collect();
    assert_eq!(got, [s("policy", r3, "p1"), s("halt", r5, "true")]);
    services.set_halt(false);
}
