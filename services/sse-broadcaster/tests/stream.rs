//! End-to-end behaviour of `/v1/config/stream` on the embedded store: changes written through
//! policy-api, read by real HTTP clients.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boifi_sse_broadcaster::{ManualClock, Settings};
use boifi_tests::http::{call, Block};
use boifi_tests::services::{deadline, Services};
use boifi_tests::wait_until;
use common::*;
use serde_json::json;

#[test]
fn changes_reach_stream_clients_in_order_and_filtered() {
    let services = Services::embedded(Settings::default(), None);
    scenario_changes_reach_filtered_clients(&services);
}

#[test]
fn resume_sends_exactly_the_missed_changes() {
    let services = Services::embedded(
        Settings {
            history: 3,
            ..Settings::default()
        },
        None,
    );
    let addr = services.broadcaster();
    let mut client = open_stream(addr, "", None);
    let retry = client.next_block(deadline()).unwrap().unwrap();
    assert_eq!(retry.retry, Some(3000));
    assert_eq!(next_event(&mut client).name(), "snapshot");
    let r1 = services.put(&policy("a", "reviews", 0));
    let r2 = services.put(&policy("b", "reviews", 0));
    assert_eq!(next_event(&mut client).revision(), r1);
    assert_eq!(next_event(&mut client).revision(), r2);
    drop(client);

    let r3 = services.put(&policy("c", "reviews", 0));
    services.delete("a");
    let r4 = services.expected().revision.unwrap();
    let s = |e: &str, r: u64, w: &str| (e.to_owned(), r, w.to_owned());
    let missed = [s("policy", r3, "c"), s("delete", r4, "a")];

    let mut by_header = open_stream(addr, "", Some(r2));
    let mut by_query = open_stream(addr, &format!("last_event_id={r2}"), None);
    let mut by_revision = open_stream(addr, &format!("revision={r2}"), None);
    for client in [&mut by_header, &mut by_query, &mut by_revision] {
        assert_eq!(next_event(client).summary(), missed[0]);
        assert_eq!(next_event(client).summary(), missed[1]);
    }
    // Nothing else was queued: the next event is the next change.
    let r5 = services.put(&policy("d", "reviews", 0));
    for client in [&mut by_header, &mut by_query, &mut by_revision] {
        assert_eq!(next_event(client).summary(), s("policy", r5, "d"));
    }

    // Too old for the history (3 entries: r3, r4, r5), and unknown: a fresh snapshot.
    for stale in [r1, r5 + 1000] {
        let mut client = open_stream(addr, "", Some(stale));
        let snapshot = next_event(&mut client);
        assert_eq!((snapshot.name(), snapshot.revision()), ("snapshot", r5));
        let names: Vec<_> = snapshot.json()["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["b", "c", "d"]);
    }
}

fn poll(services: &Services, query: &str) -> (Duration, Block) {
    let started = Instant::now();
    let (status, body) = call(
        services.broadcaster(),
        "GET",
        &format!("/v1/config/stream?mode=poll&{query}"),
        None,
        deadline(),
    )
    .expect("poll");
    assert_eq!(status, 200, "{body}");
    let mut blocks = body.split("\n\n").filter(|b| !b.is_empty());
    let block = blocks.next().expect("one block");
    assert!(blocks.next().is_none(), "exactly one block: {body:?}");
    let mut parsed = Block::default();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            parsed.comments.push(comment.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(": ") {
            match field {
                "id" => parsed.id = Some(value.to_owned()),
                "event" => parsed.event = Some(value.to_owned()),
                "data" => parsed.data = Some(value.to_owned()),
                _ => panic!("unexpected field in {block:?}"),
            }
        }
    }
    (started.elapsed(), parsed)
}

#[test]
fn long_poll_answers_at_once_when_behind_and_waits_when_current() {
    let services = Services::embedded(
        Settings {
            poll_max_wait: Duration::from_millis(1500),
            ..Settings::default()
        },
        None,
    );
    let r1 = services.put(&policy("a", "reviews", 0));
    services.wait_broadcaster_at(r1);

    // No revision, or behind: a snapshot at once.
    for query in [
        "service=reviews",
        "service=reviews&revision=0&wait_ms=20000",
    ] {
        let (elapsed, block) = poll(&services, query);
        assert_eq!((block.name(), block.revision()), ("snapshot", r1));
        assert_eq!(block.json()["policies"][0]["metadata"]["name"], "a");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    // Current: held for the wait, then only the revision the client is current at.
    let (elapsed, block) = poll(
        &services,
        &format!("service=reviews&revision={r1}&wait_ms=300"),
    );
    assert_eq!((block.event.as_deref(), block.revision()), (None, r1));
    assert_eq!(block.comments, ["timeout"]);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(300) + Duration::from_secs(3),
        "{elapsed:?}"
    );

    // A wait beyond the maximum is cut to it.
    let (elapsed, block) = poll(
        &services,
        &format!("service=reviews&revision={r1}&wait_ms=600000"),
    );
    assert_eq!(block.comments, ["timeout"]);
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1500) + Duration::from_secs(3),
        "{elapsed:?}"
    );

    // A held poll ignores changes for others and answers the first change for it.
    let services = Arc::new(services);
    let waiter = {
        let services = services.clone();
        std::thread::spawn(move || {
            poll(
                &services,
                &format!("service=reviews&revision={r1}&wait_ms=20000"),
            )
        })
    };
    assert!(wait_until(deadline(), || services
        .metrics()
        .contains("boifi_broadcaster_clients{mode=\"poll\"} 1")));
    let r2 = services.put(&policy("other", "ratings", 0));
    let r3 = services.put(&policy("b", "reviews", 0));
    let (elapsed, block) = waiter.join().unwrap();
    assert_eq!((block.name(), block.revision()), ("snapshot", r3));
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert!(r2 < r3);

    // After a change for others only, a current client learns the newer revision.
    let r4 = services.put(&policy("other", "details", 0));
    let (_, block) = poll(
        &services,
        &format!("service=reviews&revision={r3}&wait_ms=100"),
    );
    assert_eq!(
        (block.comments.as_slice(), block.revision()),
        (&["timeout".to_owned()][..], r4)
    );
}

#[test]
fn clients_converge_across_a_broadcaster_restart() {
    let mut services = Services::embedded(Settings::default(), None);
    services.put(&policy("a", "reviews", 0));
    services.put(&policy("b", "ratings", 0));
    let mut follower = Follower::new(services.broadcaster(), "");
    let expected = services.expected();
    assert!(
        follower.until(deadline(), |state| *state == expected),
        "{:?}",
        follower.state
    );

    services.stop_broadcaster();
    services.put(&policy("c", "reviews", 0));
    services.delete("a");
    services.set_halt(true);
    services.put(&policy("b", "details", 0));
    services.start_broadcaster();
    let expected = services.expected();
    assert!(
        follower.until(deadline(), |state| *state == expected),
        "{:?} != {expected:?}",
        follower.state
    );
    assert!(follower.connections >= 2);

    services.put(&policy("d", "reviews", 0));
    services.set_halt(false);
    let expected = services.expected();
    assert!(follower.until(deadline(), |state| *state == expected));
}

#[test]
fn a_stalled_client_does_not_delay_the_others() {
    let services = Services::embedded(
        Settings {
            client_buffer: 4,
            ..Settings::default()
        },
        None,
    );
    let addr = services.broadcaster();
    // Asks for the stream and never reads a byte.
    let stalled = open_stream(addr, "", None);
    let mut reader = open_stream(addr, "", None);
    assert_eq!(next_event(&mut reader).name(), "snapshot");

    // ~900 KB per event: far more than the stalled client's socket buffers can absorb.
    let body = "x".repeat(60 * 1024);
    let mut big = policy("big", "reviews", 0);
    let rules: Vec<_> = (0..14)
        .map(|_| json!({ "fault": { "abort": { "httpStatus": 503, "body": body } } }))
        .collect();
    big["spec"]["rules"] = json!(rules);
    const CHANGES: usize = 30;
    let services = Arc::new(services);
    let writer = {
        let services = services.clone();
        std::thread::spawn(move || {
            (0..CHANGES)
                .map(|i| {
                    let mut big = big.clone();
                    big["metadata"]["version"] = json!(i.to_string());
                    services.put(&big)
                })
                .collect::<Vec<_>>()
        })
    };
    let mut received = Vec::new();
    for _ in 0..CHANGES {
        let event = next_event(&mut reader);
        assert_eq!(event.name(), "policy");
        received.push(event.revision());
    }
    let written = writer.join().unwrap();
    assert_eq!(
        received, written,
        "every change, in order, while the other client stalls"
    );

    // The stalled client, once it reads, finds it was cut off and told to resync.
    let mut stalled = stalled;
    let mut last = None;
    while let Some(block) = stalled.next_block(deadline()).expect("read stalled stream") {
        last = block.event.clone();
    }
    assert_eq!(last.as_deref(), Some("resync"));
    assert!(services
        .metrics()
        .contains("boifi_broadcaster_clients_cut_off_total 1"));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn expired_rules_leave_the_stream_at_their_expiry_time() {
    const T0: u64 = 1_704_067_200_000;
    // One clock for both: policy-api stamps the expiry times, the broadcaster applies them.
    let clock = Arc::new(ManualClock::new(T0));
    let services = Services::embedded(Settings::default(), Some(clock.clone()));
    let addr = services.broadcaster();
    let mut client = open_stream(addr, "service=reviews", None);
    assert_eq!(next_event(&mut client).name(), "snapshot");

    let mut two_rules = policy("p", "reviews", 60);
    two_rules["spec"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "fault": { "duration_seconds": 120, "abort": { "httpStatus": 500 } } }));
    let r1 = services.put(&two_rules);
    let event = next_event(&mut client);
    assert_eq!(
        event.json()["status"]["rules"][0]["expires_at_ms"],
        T0 + 60_000
    );

    // Just before: nothing expires (the next event is the next change).
    clock.set(T0 + 59_999);
    let r2 = services.put(&policy("marker", "reviews", 0));
    assert_eq!(next_event(&mut client).revision(), r2);

    // At the first rule's expiry: the policy without it, with the current revision as id.
    clock.set(T0 + 60_000);
    let event = next_event(&mut client);
    assert_eq!((event.name(), event.revision()), ("policy", r2));
    let data = event.json();
    assert_eq!(data["spec"]["rules"].as_array().unwrap().len(), 1);
    assert_eq!(
        data["spec"]["rules"][0]["fault"]["abort"]["httpStatus"],
        500
    );
    assert_eq!(data["status"]["rules"][0]["expires_at_ms"], T0 + 120_000);
    assert_eq!(data["status"]["revision"], r1);

    // At the last rule's expiry: gone.
    clock.set(T0 + 120_000);
    assert_eq!(
        next_event(&mut client).summary(),
        ("delete".into(), r2, "p".into())
    );
    let mut fresh = open_stream(addr, "service=reviews", None);
    let names: Vec<_> = next_event(&mut fresh).json()["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["marker"]);
}

#[test]
fn expiry_happens_on_time_by_the_system_clock() {
    let services = Services::embedded(Settings::default(), None);
    let mut client = open_stream(services.broadcaster(), "", None);
    assert_eq!(next_event(&mut client).name(), "snapshot");
    services.put(&policy("brief", "reviews", 1));
    let event = next_event(&mut client);
    let expires_at = event.json()["status"]["rules"][0]["expires_at_ms"]
        .as_u64()
        .unwrap();
    let gone = next_event(&mut client);
    let at = now_ms();
    assert_eq!(gone.name(), "delete");
    assert!(at >= expires_at, "never early: {at} < {expires_at}");
    assert!(
        at < expires_at + 1000,
        "on time: {} ms late",
        at - expires_at
    );
}
