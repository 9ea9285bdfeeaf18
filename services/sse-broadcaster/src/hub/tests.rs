use std::collections::BTreeMap;

use prometheus::Registry;

use super::*;
use crate::model::effective;
use crate::test_support::stored;

fn hub_with(settings: Settings) -> Arc<Hub> {
    Arc::new(Hub::new(settings, Metrics::new(Registry::new()).unwrap()))
}

fn view(name: &str, service: &str, revision: u64) -> Arc<PolicyView> {
    Arc::new(effective(&stored(name, service, revision), 0).unwrap())
}

fn put(name: &str, service: &str, revision: u64, old: Option<Arc<PolicyView>>) -> Delta {
    Delta::Policy {
        name: name.to_owned(),
        new: Some(view(name, service, revision)),
        old,
    }
}

fn commit(hub: &Hub, revision: u64, deltas: Vec<Delta>, secondary: bool) {
    hub.commit(
        revision,
        false,
        Arc::new(BTreeMap::new()),
        deltas,
        secondary,
        Instant::now(),
    )
}

fn filter(service: Option<&str>) -> Arc<Filter> {
    Arc::new(Filter::parse(None, service, None).unwrap())
}

/// A client that did not say who it is: everything concerns it.
fn anyone() -> Arc<Filter> {
    Arc::new(Filter::default())
}

fn ids(frames: &[(EventKind, Bytes)]) -> Vec<(EventKind, String)> {
    frames
        .iter()
        .map(|(kind, frame)| {
            let text = String::from_utf8(frame.to_vec()).unwrap();
            let id = text
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("id: ")
                .to_owned();
            (*kind, id)
        })
        .collect()
}

/// A hub loaded at revision 1, then changes to `a` (reviews) at revisions 2..=5.
fn hub_with_history(settings: Settings) -> Arc<Hub> {
    let hub = hub_with(settings);
    commit(&hub, 1, vec![], true);
    for revision in 2..=5 {
        commit(
            &hub,
            revision,
            vec![put("a", "reviews", revision, None)],
            false,
        );
    }
    hub
}

#[test]
fn nothing_is_served_before_the_first_snapshot() {
    let hub = hub_with(Settings::default());
    assert_eq!(hub.revision(), None);
    assert_eq!(
        hub.open_stream(&anyone(), None).err(),
        Some(Refusal::NotReady)
    );
    assert!(matches!(
        hub.poll_check(&anyone(), None),
        Err(Refusal::NotReady)
    ));
    // The first commit sets the view; nobody is connected, so its deltas become no entries.
    commit(&hub, 7, vec![put("a", "reviews", 7, None)], true);
    assert_eq!(hub.revision(), Some(7));
    let start = hub.open_stream(&anyone(), Some(7)).unwrap();
    assert!(
        start.frames.is_empty(),
        "resume at the loaded revision needs nothing"
    );
    assert_eq!(hub.registered(), 1);
    drop(start);
    assert_eq!(hub.registered(), 0);
}

#[test]
fn resume_sends_exactly_the_missed_entries_or_a_snapshot() {
    let hub = hub_with_history(Settings::default());
    let everyone = anyone();
    let resumed = hub.open_stream(&everyone, Some(3)).unwrap();
    assert_eq!(
        ids(&resumed.frames),
        [
            (EventKind::Policy, "4".into()),
            (EventKind::Policy, "5".into())
        ]
    );
    let from_load = hub.open_stream(&everyone, Some(1)).unwrap();
    assert_eq!(from_load.frames.len(), 4);
    assert!(hub
        .open_stream(&everyone, Some(5))
        .unwrap()
        .frames
        .is_empty());
    for unknown in [None, Some(0), Some(6), Some(u64::MAX)] {
        let start = hub.open_stream(&everyone, unknown).unwrap();
        assert_eq!(
            ids(&start.frames),
            [(EventKind::Snapshot, "5".into())],
            "{unknown:?}"
        );
    }
    // Only what concerns the client is replayed.
    assert!(hub
        .open_stream(&filter(Some("ratings")), Some(3))
        .unwrap()
        .frames
        .is_empty());
}

#[test]
fn trimmed_history_raises_the_resume_floor() {
    let hub = hub_with_history(Settings {
        history: 2,
        ..Settings::default()
    });
    let everyone = anyone();
    assert_eq!(
        ids(&hub.open_stream(&everyone, Some(3)).unwrap().frames).len(),
        2
    );
    assert_eq!(
        ids(&hub.open_stream(&everyone, Some(2)).unwrap().frames),
        [(EventKind::Snapshot, "5".into())]
    );
    // A dropped secondary entry at revision 5 makes 5 itself unsafe to resume from.
    commit(&hub, 5, vec![put("b", "x", 5, None)], true);
    commit(&hub, 5, vec![put("c", "x", 5, None)], true);
    assert_eq!(hub.open_stream(&everyone, Some(5)).unwrap().frames.len(), 2);
    commit(&hub, 5, vec![put("d", "x", 5, None)], true);
    assert_eq!(
        ids(&hub.open_stream(&everyone, Some(5)).unwrap().frames),
        [(EventKind::Snapshot, "5".into())]
    );
}

#[test]
fn secondary_entries_are_replayed_at_their_revision() {
    let hub = hub_with_history(Settings::default());
    // An expiry at revision 5 that a client at 5 may or may not have seen.
    commit(
        &hub,
        5,
        vec![put("a", "reviews", 5, Some(view("a", "reviews", 5)))],
        true,
    );
    let start = hub.open_stream(&anyone(), Some(5)).unwrap();
    assert_eq!(ids(&start.frames), [(EventKind::Policy, "5".into())]);
    assert_eq!(hub.open_stream(&anyone(), Some(4)).unwrap().frames.len(), 2);
}

#[test]
fn a_policy_that_stops_matching_is_deleted_for_its_former_clients() {
    let hub = hub_with(Settings::default());
    commit(&hub, 1, vec![], true);
    commit(&hub, 2, vec![put("a", "reviews", 2, None)], false);
    commit(
        &hub,
        3,
        vec![put("a", "ratings", 3, Some(view("a", "reviews", 2)))],
        false,
    );
    let reviews = hub.open_stream(&filter(Some("reviews")), Some(1)).unwrap();
    assert_eq!(
        ids(&reviews.frames),
        [
            (EventKind::Policy, "2".into()),
            (EventKind::Delete, "3".into())
        ]
    );
    assert!(reviews.frames[1].1.ends_with(b"data: {\"name\":\"a\"}\n\n"));
    let ratings = hub.open_stream(&filter(Some("ratings")), Some(1)).unwrap();
    assert_eq!(ids(&ratings.frames), [(EventKind::Policy, "3".into())]);
    let other = hub.open_stream(&filter(Some("details")), Some(1)).unwrap();
    assert!(other.frames.is_empty());
}

#[test]
fn snapshots_are_filtered_and_cached_per_view() {
    let hub = hub_with(Settings::default());
    let policies: BTreeMap<_, _> = [("a", "reviews"), ("b", "ratings"), ("c", "*")]
        .into_iter()
        .map(|(name, service)| (name.to_owned(), view(name, service, 3)))
        .collect();
    hub.commit(3, true, Arc::new(policies), vec![], true, Instant::now());
    let frame = hub
        .open_stream(&filter(Some("reviews")), None)
        .unwrap()
        .frames[0]
        .1
        .clone();
    let text = std::str::from_utf8(&frame).unwrap();
    let data = text.strip_prefix("id: 3\nevent: snapshot\ndata: ").unwrap();
    let snapshot: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
    assert_eq!(snapshot["revision"], 3);
    assert_eq!(snapshot["halted"], true);
    let names: Vec<_> = snapshot["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(snapshot["policies"][0]["status"]["revision"], 3);
    let again = hub
        .open_stream(&filter(Some("reviews")), None)
        .unwrap()
        .frames[0]
        .1
        .clone();
    assert_eq!(again.as_ptr(), frame.as_ptr(), "served from the cache");
}

/// Every frame the hub renders, read back as a client reads it: the wire module's SSE reader
/// and event types, each policy parsed on its own and compiled (as the Wasm plugin does).
#[test]
fn frames_parse_as_the_shared_wire_types() {
    use boifi_policy::wire::{sse as wire_sse, EventKind, SnapshotData};
    use boifi_policy::{compile, Policy};

    let hub = hub_with(Settings::default());
    let policies: BTreeMap<_, _> = [("a", "reviews"), ("b", "ratings")]
        .into_iter()
        .map(|(name, service)| (name.to_owned(), view(name, service, 3)))
        .collect();
    hub.commit(
        3,
        false,
        Arc::new(policies.clone()),
        vec![],
        true,
        Instant::now(),
    );
    let old = policies["a"].clone();
    let deltas = vec![
        put("a", "ratings", 4, Some(old)),
        Delta::Halt(true),
        Delta::Policy {
            name: "b".into(),
            new: None,
            old: Some(policies["b"].clone()),
        },
    ];
    hub.commit(
        4,
        true,
        Arc::new(BTreeMap::new()),
        deltas,
        false,
        Instant::now(),
    );
    let read = |frame: &Bytes, kind: EventKind| {
        let text = std::str::from_utf8(frame).unwrap().to_owned();
        wire_sse::last_event_data(&text, kind.name()).expect("one event of its kind")
    };

    let snapshot = hub.open_stream(&anyone(), Some(1)).unwrap().frames;
    let [(EventKind::Snapshot, frame)] = &snapshot[..] else {
        panic!("a snapshot: {snapshot:?}");
    };
    let data = read(frame, EventKind::Snapshot);
    let raw: SnapshotData<&RawValue> = serde_json::from_str(&data).unwrap();
    assert_eq!((raw.revision, raw.halted, raw.policies.len()), (4, true, 0));
    let start = hub.open_stream(&filter(Some("ratings")), Some(3)).unwrap();
    let kinds: Vec<EventKind> = start.frames.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Policy, EventKind::Halt, EventKind::Delete]
    );
    let policy: Policy =
        serde_json::from_str(&read(&start.frames[0].1, EventKind::Policy)).unwrap();
    assert_eq!(policy.spec.selector.service.as_deref(), Some("ratings"));
    compile(&policy).expect("a valid policy");
    let halt: HaltData = serde_json::from_str(&read(&start.frames[1].1, EventKind::Halt)).unwrap();
    assert_eq!(halt, HaltData { halted: true });
    let delete: DeleteData =
        serde_json::from_str(&read(&start.frames[2].1, EventKind::Delete)).unwrap();
    assert_eq!(delete.name, "b");

    // A snapshot with policies: the cached per-policy JSON spliced into the shared envelope
    // is exactly what serializing the typed snapshot gives, and reads back policy by policy.
    let hub = hub_with(Settings::default());
    hub.commit(
        3,
        false,
        Arc::new(policies.clone()),
        vec![],
        true,
        Instant::now(),
    );
    let frame = hub.open_stream(&anyone(), None).unwrap().frames[0]
        .1
        .clone();
    let data = read(&frame, EventKind::Snapshot);
    let typed = SnapshotData {
        revision: 3,
        halted: false,
        policies: policies
            .values()
            .map(|view| serde_json::from_str::<Policy>(view.json.get()).unwrap())
            .collect::<Vec<Policy>>(),
    };
    assert_eq!(data, serde_json::to_string(&typed).unwrap());
    let raw: SnapshotData<&RawValue> = serde_json::from_str(&data).unwrap();
    let names: Vec<String> = raw
        .policies
        .iter()
        .map(|json| {
            let policy: Policy = serde_json::from_str(json.get()).unwrap();
            compile(&policy).expect("a valid policy").name().to_owned()
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
}

fn entry(item: Option<StreamItem>) -> Arc<Entry> {
    match item {
        Some(StreamItem::Entry(entry)) => entry,
        Some(StreamItem::Ping) => panic!("a ping, expected an entry"),
        Some(StreamItem::CutOff) => panic!("cut off, expected an entry"),
        None => panic!("the queue ended, expected an entry"),
    }
}

#[tokio::test]
async fn live_entries_follow_the_start_without_gap_or_duplicate() {
    let hub = hub_with_history(Settings::default());
    let mut start = hub.open_stream(&anyone(), Some(4)).unwrap();
    assert_eq!(ids(&start.frames), [(EventKind::Policy, "5".into())]);
    commit(&hub, 6, vec![put("a", "reviews", 6, None)], false);
    assert_eq!(entry(start.items.recv().await).revision, 6);
    hub.ping();
    assert!(matches!(start.items.recv().await, Some(StreamItem::Ping)));
    assert!(start.items.try_recv().is_err(), "nothing else queued");
}

#[tokio::test]
async fn a_stream_is_handed_only_what_concerns_it() {
    let hub = hub_with_history(Settings::default());
    let mut ratings = hub.open_stream(&filter(Some("ratings")), None).unwrap();
    commit(&hub, 6, vec![put("a", "reviews", 6, None)], false);
    commit(&hub, 7, vec![put("b", "ratings", 7, None)], false);
    // A policy that moves away is a delete for its former clients.
    commit(
        &hub,
        8,
        vec![put("b", "details", 8, Some(view("b", "ratings", 7)))],
        false,
    );
    commit(&hub, 9, vec![Delta::Halt(true)], false);
    let mut got = Vec::new();
    while let Ok(StreamItem::Entry(entry)) = ratings.items.try_recv() {
        got.push((
            entry.revision,
            entry.frame_for(&filter(Some("ratings"))).unwrap().0,
        ));
    }
    assert_eq!(
        got,
        [
            (7, EventKind::Policy),
            (8, EventKind::Delete),
            (9, EventKind::Halt)
        ]
    );
}

#[tokio::test]
async fn a_lagging_stream_is_cut_off_and_others_are_not_held_back() {
    let hub = hub_with_history(Settings {
        client_buffer: 2,
        ..Settings::default()
    });
    let mut slow = hub.open_stream(&anyone(), None).unwrap();
    let mut fast = hub.open_stream(&anyone(), None).unwrap();
    for revision in 6..=9 {
        commit(
            &hub,
            revision,
            vec![put("a", "reviews", revision, None)],
            false,
        );
        assert_eq!(entry(fast.items.recv().await).revision, revision);
    }
    assert_eq!(entry(slow.items.recv().await).revision, 6);
    assert_eq!(entry(slow.items.recv().await).revision, 7);
    assert!(matches!(slow.items.recv().await, Some(StreamItem::CutOff)));
    // Out of the registry: nothing follows.
    assert!(slow.items.recv().await.is_none());
    assert_eq!(hub.registered(), 1);
    // A stream that stops reading is cut off by heartbeats alone as well.
    hub.ping();
    hub.ping();
    assert_eq!(hub.registered(), 1);
    hub.ping();
    assert_eq!(hub.registered(), 0, "fast stopped reading too");
}

#[tokio::test]
async fn fanout_is_observed_once_the_last_client_takes_the_entry() {
    let hub = hub_with_history(Settings::default());
    let mut first = hub.open_stream(&anyone(), None).unwrap();
    let mut second = hub.open_stream(&anyone(), None).unwrap();
    let PollCheck::Wait(held) = hub.poll_check(&anyone(), Some(5)).unwrap() else {
        panic!("current")
    };
    // Not concerned: neither handed the entry nor counted.
    let _ratings = hub.open_stream(&filter(Some("ratings")), None).unwrap();
    commit(&hub, 6, vec![put("a", "reviews", 6, None)], false);
    let observed = || hub.metrics.fanout_seconds.get_sample_count();
    entry(first.items.recv().await).taken(&hub.metrics);
    entry(second.items.recv().await).taken(&hub.metrics);
    assert_eq!(observed(), 0);
    // The poll takes it when it answers (or is dropped unanswered).
    drop(held);
    assert_eq!(observed(), 1);
    // With nobody concerned there is no fan-out to measure.
    drop((first, second));
    commit(&hub, 7, vec![put("a", "reviews", 7, None)], false);
    assert_eq!(observed(), 1);
}

fn respond(check: Result<PollCheck, Refusal>, filter: &Filter) -> String {
    match check.unwrap() {
        PollCheck::Respond(view) => {
            String::from_utf8(view.snapshot_frame(filter).to_vec()).unwrap()
        }
        PollCheck::Wait(_) => panic!("expected a snapshot"),
    }
}

fn held(check: Result<PollCheck, Refusal>) -> PollWait {
    match check.unwrap() {
        PollCheck::Wait(held) => held,
        PollCheck::Respond(_) => panic!("expected to wait"),
    }
}

fn answer_text(answer: PollAnswer) -> String {
    match answer {
        PollAnswer::Snapshot(frame) => String::from_utf8(frame.to_vec()).unwrap(),
        PollAnswer::Current(revision) => format!("current at {revision}"),
    }
}

#[test]
fn a_poll_behind_or_unknown_is_answered_at_once() {
    let hub = hub_with_history(Settings::default());
    let reviews = filter(Some("reviews"));
    let ratings = filter(Some("ratings"));
    assert!(respond(hub.poll_check(&reviews, None), &reviews).starts_with("id: 5\nevent: snapshot"));
    for behind_or_unknown in [0, 9, 4] {
        respond(hub.poll_check(&reviews, Some(behind_or_unknown)), &reviews);
    }
    // Changes at 2..=5 concern only `reviews`: a `ratings` client at 2 is current.
    held(hub.poll_check(&ratings, Some(2)));
    held(hub.poll_check(&reviews, Some(5)));
    assert_eq!(hub.registered(), 0, "dropped polls leave the registry");
}

#[tokio::test(start_paused = true)]
async fn a_held_poll_is_woken_only_by_a_change_that_concerns_it() {
    let hub = hub_with_history(Settings::default());
    let ratings = held(hub.poll_check(&filter(Some("ratings")), Some(5)));
    let details = held(hub.poll_check(&filter(Some("details")), Some(5)));
    let reviews = held(hub.poll_check(&filter(Some("reviews")), Some(5)));
    let anyone = held(hub.poll_check(&anyone(), Some(5)));
    assert_eq!(hub.registered(), 4);

    commit(&hub, 6, vec![put("a", "reviews", 6, None)], false);
    // Woken and out of the registry: the reviews client and the one that said nothing.
    assert_eq!(hub.registered(), 2);
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    assert!(answer_text(reviews.until(far).await).starts_with("id: 6\nevent: snapshot"));
    assert!(answer_text(anyone.until(far).await).starts_with("id: 6\nevent: snapshot"));

    // A policy moving from ratings to details wakes both (for one it is now gone).
    commit(
        &hub,
        7,
        vec![put("b", "details", 7, Some(view("b", "ratings", 6)))],
        false,
    );
    assert_eq!(hub.registered(), 0);
    for moved in [ratings, details] {
        let text = answer_text(moved.until(far).await);
        assert!(text.starts_with("id: 7\nevent: snapshot"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_poll_times_out_current_at_the_latest_revision() {
    let hub = hub_with_history(Settings::default());
    let ratings = held(hub.poll_check(&filter(Some("ratings")), Some(5)));
    commit(&hub, 6, vec![put("a", "reviews", 6, None)], false);
    let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    assert_eq!(answer_text(ratings.until(soon).await), "current at 6");
    assert_eq!(hub.registered(), 0);

    // Halt concerns everyone; shutdown lets go of everyone at their own revision.
    let ratings = held(hub.poll_check(&filter(Some("ratings")), Some(6)));
    commit(&hub, 7, vec![Delta::Halt(true)], false);
    let text = answer_text(ratings.until(soon).await);
    assert!(text.starts_with("id: 7\nevent: snapshot"), "{text}");
    let details = held(hub.poll_check(&filter(Some("details")), Some(7)));
    hub.shut_down();
    assert_eq!(answer_text(details.until(soon).await), "current at 7");
}

#[tokio::test]
async fn shut_down_refuses_and_closes() {
    let hub = hub_with_history(Settings::default());
    let mut start = hub.open_stream(&anyone(), None).unwrap();
    hub.shut_down();
    assert!(*hub.shutdown_signal().borrow());
    assert_eq!(
        hub.open_stream(&anyone(), None).err(),
        Some(Refusal::ShuttingDown)
    );
    assert!(matches!(
        hub.poll_check(&anyone(), None),
        Err(Refusal::ShuttingDown)
    ));
    assert!(start.items.recv().await.is_none());
    // Later changes are still recorded, for nobody.
    commit(&hub, 6, vec![put("a", "reviews", 6, None)], false);
    assert_eq!(hub.revision(), Some(6));
}

#[test]
fn admit_enforces_the_client_limit() {
    let hub = hub_with(Settings {
        max_clients: 2,
        ..Settings::default()
    });
    let a = hub.admit(Mode::Stream).unwrap();
    let _b = hub.admit(Mode::Poll).unwrap();
    assert!(matches!(
        hub.admit(Mode::Stream),
        Err(Refusal::TooManyClients)
    ));
    assert_eq!(hub.metrics.clients(Mode::Stream).get(), 1);
    drop(a);
    assert_eq!(hub.metrics.clients(Mode::Stream).get(), 0);
    assert!(hub.admit(Mode::Stream).is_ok());
    assert_eq!(hub.metrics.clients_rejected.get(), 1);
}

#[test]
fn lag_is_behind_exactly_when_a_poll_would_be_answered_at_once() {
    let hub = hub_with(Settings {
        history: 3,
        ..Settings::default()
    });
    let reviews = filter(Some("reviews"));
    let ratings = filter(Some("ratings"));
    assert_eq!(hub.lag(&reviews, Some(1)), Lag::Unknown, "nothing loaded");
    commit(&hub, 1, vec![], true);
    let before = Instant::now();
    commit(&hub, 2, vec![put("a", "reviews", 2, None)], false);
    commit(&hub, 3, vec![put("b", "ratings", 3, None)], false);
    let Lag::Behind { since } = hub.lag(&reviews, Some(1)) else {
        panic!("reviews at 1 missed revision 2");
    };
    assert!(since >= before);
    assert_eq!(hub.lag(&reviews, Some(2)), Lag::Current, "3 is not its");
    assert!(matches!(hub.lag(&ratings, Some(2)), Lag::Behind { .. }));
    assert_eq!(hub.lag(&ratings, Some(3)), Lag::Current);
    assert_eq!(hub.lag(&ratings, Some(99)), Lag::Current, "ahead of us");
    assert_eq!(hub.lag(&ratings, None), Lag::Unknown);
    // The kill switch concerns everyone: behind since its own arrival, not the older change.
    let halted_at = Instant::now();
    hub.commit(
        4,
        true,
        Arc::new(BTreeMap::new()),
        vec![Delta::Halt(true)],
        false,
        halted_at,
    );
    assert_eq!(hub.lag(&reviews, Some(2)), Lag::Behind { since: halted_at });
    assert_eq!(hub.position(), Some((4, true)));
    // The same rule as the poll's: for every filter and revision up to ours, behind (or
    // unknown) exactly when a poll from there is answered at once. (A poll from a revision
    // ahead of this replica gets our snapshot too, yet no change here is newer than it.)
    commit(&hub, 5, vec![put("c", "reviews", 5, None)], false);
    for filter in [&reviews, &ratings, &anyone()] {
        for revision in (0..=5).map(Some).chain([None]) {
            let answered = matches!(hub.poll_check(filter, revision), Ok(PollCheck::Respond(_)));
            let lag = hub.lag(filter, revision);
            assert_eq!(
                answered,
                lag != Lag::Current,
                "{filter:?} at {revision:?}: {lag:?}"
            );
        }
    }
    assert_eq!(
        hub.lag(&reviews, Some(1)),
        Lag::Unknown,
        "older than the history"
    );
}
