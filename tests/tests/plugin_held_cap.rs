//! A cap on requests held by delays: a flood of requests to a delayed route holds at most
//! `max_held_requests` per plugin VM (or a policy's own `spec.max_held_requests`); the rest pass
//! at once, unfaulted, and are counted. Envoy's memory stays bounded meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use boifi_sse_broadcaster::Settings;
use boifi_tests::envoy::{
    Envoy, EnvoyBuilder, Upstream, BROADCASTER_AUTHORITY, BROADCASTER_CLUSTER,
};
use boifi_tests::services::{deadline, Services};
use boifi_tests::wait_until;
use serde_json::json;

const CAP: u64 = 40;
const FLOOD: usize = 600;
const POLICY_CAP: u64 = 5;

/// Opens `n` connections, each sending one GET to `path` and not waiting for the answer.
fn flood(envoy: &Envoy, path: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut conn = TcpStream::connect(envoy.addr()).expect("connect");
            write!(
                conn,
                "GET {path} HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n"
            )
            .expect("send");
            conn
        })
        .collect()
}

/// Reads the answers of the connections that already got one, without waiting for held ones.
fn answered_at_once(conns: &mut [TcpStream]) -> Vec<String> {
    conns
        .iter_mut()
        .filter_map(|conn| {
            conn.set_read_timeout(Some(Duration::from_millis(200)))
                .ok()?;
            let mut head = [0u8; 512];
            let n = conn.read(&mut head).ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&head[..n]).into_owned())
        })
        .collect()
}

#[test]
fn a_flood_holds_at_most_the_cap_and_the_rest_pass() {
    let plane = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    let config = format!(
        r#"{{"broadcaster_cluster":"{BROADCASTER_CLUSTER}","broadcaster_authority":"{BROADCASTER_AUTHORITY}","poll_wait_ms":2000,"backoff_min_ms":50,"backoff_max_ms":500,"max_held_requests":{CAP}}}"#
    );
    // One worker: one plugin VM, so the cap is the sidecar's.
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port())
        .plugin_config(&config)
        .concurrency(1)
        .start();
    plane.put(&json!({
        "metadata": {"name": "slow"},
        "spec": {"rules": [{"match": {"path": {"prefix": "/slow"}},
                            "fault": {"delay": {"fixed_delay_ms": 20_000}}}]}
    }));
    let revision = plane.put(&json!({
        "metadata": {"name": "slow-capped"},
        "spec": {"max_held_requests": POLICY_CAP,
                 "rules": [{"match": {"path": {"prefix": "/capped"}},
                            "fault": {"delay": {"fixed_delay_ms": 20_000}}}]}
    }));
    assert!(wait_until(deadline(), || envoy.has_applied(revision)));
    let before = envoy.heap_allocated().expect("heap");

    let started = Instant::now();
    let mut conns = flood(&envoy, "/slow", FLOOD);
    let overflow = FLOOD as u64 - CAP;
    let counted = wait_until(deadline(), || {
        envoy.stat("wasmcustom.boifi_held_overflow") == Some(overflow)
    });
    assert!(
        counted,
        "overflow {:?}",
        envoy.stat("wasmcustom.boifi_held_overflow")
    );
    assert_eq!(envoy.stat("wasmcustom.boifi_held_requests"), Some(CAP));
    // Everything past the cap went through at once, unfaulted.
    let answered = answered_at_once(&mut conns);
    assert_eq!(answered.len() as u64, overflow);
    assert!(answered
        .iter()
        .all(|a| a.starts_with("HTTP/1.1 200") && !a.contains("x-boifi-fault")));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // The policy's own cap is lower: past it, its requests pass too.
    let mut capped = flood(&envoy, "/capped", 10);
    let counted = wait_until(deadline(), || {
        envoy.stat("wasmcustom.boifi_held_overflow") == Some(overflow + 10)
    });
    assert!(
        counted,
        "a full sidecar holds none of the capped policy's requests"
    );
    assert_eq!(answered_at_once(&mut capped).len(), 10);
    assert_eq!(envoy.stat("wasmcustom.boifi_held_requests"), Some(CAP));

    let grown = envoy.heap_allocated().expect("heap").saturating_sub(before);
    println!(
        "Envoy heap grew {} KiB while {FLOOD} requests flooded a route capped at {CAP}",
        grown / 1024
    );
    assert!(grown < 64 * 1024 * 1024, "heap grew {grown} bytes");

    // Requests that go away free their place.
    drop(conns);
    let freed = wait_until(deadline(), || {
        envoy.stat("wasmcustom.boifi_held_requests") == Some(0)
    });
    assert!(
        freed,
        "held {:?}",
        envoy.stat("wasmcustom.boifi_held_requests")
    );
}
