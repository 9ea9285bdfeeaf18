//! The VM driven through a fake host: several VMs in one fake Envoy process (shared data with
//! Envoy's CAS rules, one clock the test moves), polls answered by hand, requests by context id.

use std::collections::BTreeMap;
use std::rc::Rc;

use boifi_policy::wire::{self, EventKind, SnapshotData};
use serde_json::json;

use super::*;
use crate::identity::Resolved;
use crate::request::HostFailed;
use crate::test_support::{Call, FakeHost, Process};

const CONFIG: &[u8] =
    br#"{"broadcaster_cluster":"c","broadcaster_authority":"a","poll_wait_ms":10000,
    "poll_timeout_margin_ms":2000,"backoff_min_ms":100,"backoff_max_ms":1600}"#;
const FIRST_POLL: &str =
    "/v1/config/stream?mode=poll&wait_ms=10000&namespace=demo&service=reviews&labels=app:reviews";
const ROOT: u32 = 1;

fn identity() -> Resolved {
    Resolved {
        workload: Workload {
            namespace: "demo".into(),
            name: "reviews".into(),
            labels: BTreeMap::from([("app".to_owned(), "reviews".to_owned())]),
        },
        pod: "reviews-7d9f5c-00000".into(),
        labels_known: true,
        problems: Vec::new(),
    }
}

/// A configured VM in `process` and a handle on its host.
fn vm(process: &Rc<Process>) -> (Vm<FakeHost>, FakeHost) {
    numbered_vm(process, ROOT)
}

/// The same, with another root context id: VMs created in the same nanosecond with the same
/// id would draw the same lease id.
fn numbered_vm(process: &Rc<Process>, root_id: u32) -> (Vm<FakeHost>, FakeHost) {
    let host = FakeHost::new(process);
    let mut vm = Vm::new(host.clone(), root_id);
    assert!(vm.configure(Some(CONFIG), identity));
    (vm, host)
}

/// A policy for `reviews` with one rule: `fault` as JSON.
fn policy(name: &str, fault: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"selector": {"service": "reviews"}, "rules": [{"fault": fault}]}
    })
}

/// A poll answer as the broadcaster writes it: one `snapshot` event.
fn snapshot(revision: u64, halted: bool, policies: &[serde_json::Value]) -> Vec<u8> {
    let data = SnapshotData {
        revision,
        halted,
        policies: policies.to_vec(),
    };
    let json = serde_json::to_vec(&data).unwrap();
    wire::sse::event(revision, EventKind::Snapshot.name(), &json)
}

/// Answers the poll in flight with `status` and `body`.
fn answer(vm: &mut Vm<FakeHost>, host: &FakeHost, status: Option<&str>, body: &[u8]) {
    host.answer(status, body);
    vm.on_poll_response(host.last_token(), body.len());
}

/// Answers the poll in flight with a snapshot of no policies at `revision`.
fn answer_revision(vm: &mut Vm<FakeHost>, host: &FakeHost, revision: u64) {
    answer(vm, host, Some("200"), &snapshot(revision, false, &[]));
}

/// Ticks at the current time and returns the polls sent.
fn tick(vm: &mut Vm<FakeHost>, host: &FakeHost) -> Vec<String> {
    vm.on_tick();
    FakeHost::polls(&host.calls())
        .into_iter()
        .map(str::to_owned)
        .collect()
}

struct Headers(&'static [(&'static str, &'static str)]);

impl HeaderSource for Headers {
    fn first(&self, name: &str) -> Result<Option<String>, HostFailed> {
        Ok(self
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned()))
    }

    fn all(&self) -> Result<Vec<(String, String)>, HostFailed> {
        Ok(self
            .0
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect())
    }
}

const GET: Headers = Headers(&[(":method", "GET"), (":path", "/")]);

/// A VM with one snapshot of `policies` applied at revision 5.
fn vm_with(process: &Rc<Process>, policies: &[serde_json::Value]) -> (Vm<FakeHost>, FakeHost) {
    let (mut vm, host) = vm(process);
    assert_eq!(tick(&mut vm, &host), [FIRST_POLL]);
    answer(&mut vm, &host, Some("200"), &snapshot(5, false, policies));
    host.calls();
    (vm, host)
}

#[test]
fn an_unconfigured_or_misconfigured_vm_passes_everything() {
    let process = Process::at_ms(1_000);
    let host = FakeHost::new(&process);
    let mut vm = Vm::new(host.clone(), ROOT);
    let mut request = RequestState::new(2);
    assert_eq!(vm.on_request_headers(&mut request, GET), Action::Continue);
    vm.on_tick();
    assert!(host.calls().is_empty(), "no configuration, no poll");
    assert!(vm.configure(Some(b"{}"), || unreachable!(
        "identity is read after the config"
    )));
    assert_eq!(host.counter(metrics::FAIL_OPEN), 1);
    assert_eq!(vm.on_request_headers(&mut request, GET), Action::Continue);
}

#[test]
fn polls_are_sent_at_once_then_after_each_answer() {
    let process = Process::at_ms(1_000);
    let (mut vm, host) = vm(&process);
    assert_eq!(host.tick_ms(), Some(1), "the first poll is due now");
    assert_eq!(tick(&mut vm, &host), [FIRST_POLL]);
    assert_eq!(
        vm.poller().map(|p| p.request().timeout_ms),
        Some(12_000),
        "wait plus margin"
    );
    // In flight: ticks only renew the lease (every 50 ms) and send nothing.
    assert_eq!(host.tick_ms(), Some(lease::SYNC_MS));
    process.advance_ms(lease::SYNC_MS);
    assert!(tick(&mut vm, &host).is_empty());

    // A snapshot: applied, shared, and the next poll (from its revision) goes out at once.
    process.advance_ms(20);
    let abort = policy("p1", json!({"abort": {"httpStatus": 503}}));
    answer(&mut vm, &host, Some("200"), &snapshot(42, false, &[abort]));
    assert_eq!(vm.policies().revision(), 42);
    assert_eq!(vm.policies().policies().len(), 1);
    assert_eq!(host.gauge(metrics::CONFIG_REVISION), Some(42));
    assert_eq!(host.gauge(metrics::POLICIES_ACTIVE), Some(1));
    assert_eq!(host.counter(metrics::CONFIG_UPDATES), 1);
    let polls: Vec<String> = FakeHost::polls(&host.calls())
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        polls,
        ["/v1/config/stream?mode=poll&wait_ms=10000&revision=42&namespace=demo&service=reviews&labels=app:reviews"]
    );

    // The wait ran out without a change: poll again at once.
    process.advance_ms(10_000);
    answer(
        &mut vm,
        &host,
        Some("200"),
        &wire::sse::id_only("timeout", 42),
    );
    assert_eq!(FakeHost::polls(&host.calls()).len(), 1);
    // An unchanged answer long before the wait ends: paced by the minimum backoff.
    process.advance_ms(10);
    answer(
        &mut vm,
        &host,
        Some("200"),
        &wire::sse::id_only("timeout", 42),
    );
    assert!(host.calls().is_empty());
    assert_eq!(host.tick_ms(), Some(lease::SYNC_MS));
    process.advance_ms(99);
    assert!(tick(&mut vm, &host).is_empty());
    process.advance_ms(1);
    assert_eq!(tick(&mut vm, &host).len(), 1);
    assert_eq!(host.counter(metrics::CONFIG_FETCH_FAILURES), 0);
}

#[test]
fn failed_polls_back_off_and_keep_the_set() {
    let process = Process::at_ms(1_000);
    let abort = policy("p1", json!({"abort": {"httpStatus": 503}}));
    let (mut vm, host) = vm_with(&process, &[abort]);
    let mut waits = Vec::new();
    for status in [Some("503"), None, Some("200")] {
        let body: &[u8] = if status == Some("200") {
            b"event: snapshot\ndata: {broken\n\n"
        } else {
            b""
        };
        let sent = process.now_ms();
        answer(&mut vm, &host, status, body);
        let due = vm.poller().unwrap().wake_at_ms();
        waits.push(due - sent);
        // Nothing is sent before the retry is due (ticks every 50 ms at the latest)...
        while process.now_ms() + lease::SYNC_MS < due {
            process.advance_ms(lease::SYNC_MS);
            assert!(tick(&mut vm, &host).is_empty());
        }
        // ...and the retry goes out once it is.
        process.advance_ms(due - process.now_ms());
        assert_eq!(tick(&mut vm, &host).len(), 1);
    }
    // Capped exponential with jitter: [min/2, min], then doubling.
    for (wait, cap) in waits.iter().zip([100, 200, 400]) {
        assert!((cap / 2..=cap).contains(wait), "{waits:?}");
    }
    assert_eq!(host.counter(metrics::CONFIG_FETCH_FAILURES), 3);
    assert_eq!(vm.policies().revision(), 5, "the last good set stays");
    assert_eq!(vm.policies().policies().len(), 1);

    // A poll that cannot even be sent backs off too.
    host.refuse_dispatch(true);
    answer(&mut vm, &host, Some("503"), b"");
    process.advance_ms(vm.poller().unwrap().wake_at_ms() - process.now_ms());
    assert!(tick(&mut vm, &host).is_empty());
    assert_eq!(host.counter(metrics::CONFIG_FETCH_FAILURES), 5);
    assert_eq!(vm.poller().unwrap().failures(), 5);
}

#[test]
fn a_lost_poll_is_abandoned_and_its_late_answer_ignored() {
    let process = Process::at_ms(1_000);
    let (mut vm, host) = vm(&process);
    assert_eq!(tick(&mut vm, &host).len(), 1);
    let lost = host.last_token();
    // Envoy's timeout (12 s) plus a second of grace, then the poll counts as lost.
    process.advance_ms(12_999);
    assert!(tick(&mut vm, &host).is_empty());
    assert_eq!(host.counter(metrics::CONFIG_FETCH_FAILURES), 0);
    process.advance_ms(1);
    assert!(
        tick(&mut vm, &host).is_empty(),
        "the retry waits for its backoff"
    );
    assert_eq!(host.counter(metrics::CONFIG_FETCH_FAILURES), 1);
    assert_eq!(vm.poller().unwrap().failures(), 1);
    // Its answer arrives after all: ignored.
    host.answer(Some("200"), &snapshot(9, false, &[]));
    vm.on_poll_response(lost, 10);
    assert_eq!(vm.policies().revision(), 0);
}

/// Two plugins (two BOIFI releases) in one Envoy share its shared data: each VM keys it by
/// its plugin's name, so each plugin has a VM that polls its own broadcaster.
#[test]
fn vms_of_two_plugins_each_poll() {
    let process = Process::at_ms(1_000);
    let named = |name: &str, root_id: u32| {
        let host = FakeHost::new(&process);
        host.set_plugin_name(name);
        let mut vm = Vm::new(host.clone(), root_id);
        assert!(vm.configure(Some(CONFIG), identity));
        (vm, host)
    };
    let (mut first, first_host) = named("boifi.boifi-plugin", ROOT);
    let (mut second, second_host) = named("chaos-team.boifi-plugin", ROOT + 1);
    assert_eq!(tick(&mut first, &first_host).len(), 1);
    assert_eq!(
        tick(&mut second, &second_host).len(),
        1,
        "not the first plugin's lease"
    );
    answer_revision(&mut first, &first_host, 7);
    process.advance_ms(lease::SYNC_MS);
    tick(&mut second, &second_host);
    assert_eq!(
        second.policies().revision(),
        0,
        "not the first plugin's snapshot"
    );
}

/// The poll after a new revision reports it as enforced (its `revision`), so it waits until every
/// VM of the Envoy applies that revision: the API's "enforced" then holds for every worker.
#[test]
fn the_next_poll_waits_until_every_vm_applies_the_new_revision() {
    let process = Process::at_ms(1_000);
    let (mut leader, leader_host) = vm(&process);
    let (mut follower, follower_host) = numbered_vm(&process, ROOT + 1);
    assert_eq!(tick(&mut leader, &leader_host).len(), 1);
    assert!(tick(&mut follower, &follower_host).is_empty());

    answer_revision(&mut leader, &leader_host, 7);
    assert!(
        FakeHost::polls(&leader_host.calls()).is_empty(),
        "held: the follower still applies revision 0"
    );
    assert_eq!(leader_host.tick_ms(), Some(applied::HOLD_CHECK_MS));
    process.advance_ms(applied::HOLD_CHECK_MS);
    assert!(tick(&mut leader, &leader_host).is_empty(), "still held");

    process.advance_ms(lease::SYNC_MS - applied::HOLD_CHECK_MS);
    assert!(tick(&mut follower, &follower_host).is_empty());
    assert_eq!(follower.policies().revision(), 7);
    let polls = tick(&mut leader, &leader_host);
    assert_eq!(polls.len(), 1, "sent once the follower has it");
    assert!(polls[0].contains("&revision=7&"), "{polls:?}");

    // An answer without a new revision (the poll's wait ran out) is followed by a poll at once.
    answer_revision(&mut leader, &leader_host, 7);
    assert_eq!(FakeHost::polls(&leader_host.calls()).len(), 1);
}

/// A VM that never applies the new revision (it stopped ticking, or cannot parse the snapshot)
/// holds the poll for at most MAX_HOLD_MS, and one gone for LIVE_MS is not waited for at all.
#[test]
fn a_vm_that_does_not_catch_up_holds_the_poll_for_a_bounded_time() {
    let process = Process::at_ms(1_000);
    let (mut leader, leader_host) = vm(&process);
    let (mut follower, follower_host) = numbered_vm(&process, ROOT + 1);
    tick(&mut leader, &leader_host);
    tick(&mut follower, &follower_host);
    answer_revision(&mut leader, &leader_host, 7);
    let mut waited = 0;
    while FakeHost::polls(&leader_host.calls()).is_empty() {
        assert!(waited < applied::MAX_HOLD_MS, "never polled again");
        process.advance_ms(applied::HOLD_CHECK_MS);
        waited += applied::HOLD_CHECK_MS;
        leader.on_tick();
    }
    assert_eq!(waited, applied::MAX_HOLD_MS);

    // The follower is gone by the next change: no wait.
    process.advance_ms(applied::LIVE_MS);
    leader.on_tick();
    answer_revision(&mut leader, &leader_host, 8);
    assert_eq!(FakeHost::polls(&leader_host.calls()).len(), 1);
}

#[test]
fn one_vm_polls_the_others_follow_and_one_takes_over_when_it_goes() {
    let process = Process::at_ms(1_000);
    let (mut leader, leader_host) = vm(&process);
    let (mut follower, follower_host) = numbered_vm(&process, ROOT + 1);
    assert_eq!(tick(&mut leader, &leader_host).len(), 1);
    assert!(
        tick(&mut follower, &follower_host).is_empty(),
        "one poll per Envoy"
    );
    assert_eq!(follower_host.tick_ms(), Some(lease::SYNC_MS));

    // The leader's snapshot reaches the follower through shared data on its next tick.
    let delay = policy("slow", json!({"delay": {"fixed_delay_ms": 100}}));
    answer(
        &mut leader,
        &leader_host,
        Some("200"),
        &snapshot(7, false, &[delay]),
    );
    assert_eq!(follower.policies().revision(), 0);
    process.advance_ms(lease::SYNC_MS);
    assert!(tick(&mut follower, &follower_host).is_empty());
    assert_eq!(follower.policies().revision(), 7);
    assert_eq!(follower.policies().policies()[0].name(), "slow");
    assert_eq!(follower_host.counter(metrics::CONFIG_UPDATES), 1);
    // The leader does not apply its own snapshot a second time.
    tick(&mut leader, &leader_host);
    assert_eq!(leader_host.counter(metrics::CONFIG_UPDATES), 1);

    // The leader goes away (its VM stops ticking): once its lease runs out, the follower
    // polls, from the revision it already has.
    for _ in 0..(lease::LEASE_MS / lease::SYNC_MS - 1) {
        process.advance_ms(lease::SYNC_MS);
        assert!(tick(&mut follower, &follower_host).is_empty());
    }
    process.advance_ms(lease::SYNC_MS);
    let polls = tick(&mut follower, &follower_host);
    assert_eq!(polls.len(), 1);
    assert!(polls[0].contains("&revision=7&"), "{polls:?}");
    // The old leader comes back: it follows now.
    process.advance_ms(lease::SYNC_MS);
    assert!(tick(&mut leader, &leader_host).is_empty());
}

#[test]
fn a_delay_holds_the_request_until_its_deadline() {
    let process = Process::at_ms(1_000);
    let delay = policy("slow", json!({"delay": {"fixed_delay_ms": 250}}));
    let (mut vm, host) = vm_with(&process, &[delay]);
    let mut request = RequestState::new(7);
    assert_eq!(vm.on_request_headers(&mut request, GET), Action::Pause);
    assert_eq!(vm.held(), 1);
    assert_eq!(
        vm.on_request_data(&request),
        Action::Pause,
        "body waits too"
    );
    assert_eq!(
        host.counter("boifi_faults_injected.fault_type.delay.policy.slow"),
        1
    );
    // The tick stays armed for the lease's next look, which comes first.
    assert_eq!(host.tick_ms(), Some(lease::SYNC_MS));
    let mut elapsed = 0;
    while elapsed + lease::SYNC_MS < 250 {
        process.advance_ms(lease::SYNC_MS);
        elapsed += lease::SYNC_MS;
        vm.on_tick();
        assert!(
            !host
                .calls()
                .iter()
                .any(|c| matches!(c, Call::Resume { .. })),
            "never early"
        );
    }
    assert_eq!(
        host.tick_ms(),
        Some(250 - elapsed),
        "armed for the deadline"
    );
    process.advance_ms(250 - elapsed);
    vm.on_tick();
    assert_eq!(host.calls(), [Call::Resume { context: 7 }]);
    assert_eq!(vm.held(), 0);
    assert_eq!(vm.on_request_data(&request), Action::Continue);
    assert_eq!(host.records("boifi_fault_delay_ms.policy.slow"), [250]);
    // A delayed (not aborted) response is tagged with the policy (Envoy calls back with the
    // request's context effective).
    host.set_effective_context(7);
    assert_eq!(vm.on_response_headers(&request), Action::Continue);
    assert_eq!(
        host.calls(),
        [Call::ResponseHeader {
            context: 7,
            name: FAULT_HEADER.into(),
            value: "slow".into()
        }]
    );
}

#[test]
fn a_delayed_abort_replies_at_the_deadline() {
    let process = Process::at_ms(1_000);
    let both = policy(
        "both",
        json!({"start_delay_ms": 5, "delay": {"fixed_delay_ms": 10},
               "abort": {"httpStatus": 429, "body": "slow down", "headers": {"x-k": "v", "x-boifi-fault": "spoof"}}}),
    );
    let (mut vm, host) = vm_with(&process, &[both]);
    let mut request = RequestState::new(7);
    assert_eq!(vm.on_request_headers(&mut request, GET), Action::Pause);
    assert_eq!(host.tick_ms(), Some(15), "armed for the earlier deadline");
    process.advance_ms(15);
    vm.on_tick();
    assert_eq!(
        host.calls(),
        [Call::Reply {
            context: 7,
            status: 429,
            headers: vec![
                ("x-k".into(), "v".into()),
                (FAULT_HEADER.into(), "both".into())
            ],
            body: Some("slow down".into()),
        }]
    );
    assert_eq!(
        host.counter("boifi_faults_injected.fault_type.abort.policy.both"),
        1
    );
    // No tag: the local reply already carries the header.
    vm.on_response_headers(&request);
    assert!(host.calls().is_empty());
}

#[test]
fn an_abort_without_delay_replies_at_once() {
    let process = Process::at_ms(1_000);
    let abort = policy("p1", json!({"abort": {"httpStatus": 503}}));
    let (mut vm, host) = vm_with(&process, &[abort]);
    let mut request = RequestState::new(3);
    assert_eq!(vm.on_request_headers(&mut request, GET), Action::Pause);
    let calls = host.calls();
    assert!(
        matches!(&calls[..], [Call::Reply { status: 503, .. }]),
        "{calls:?}"
    );
    assert_eq!(vm.held(), 0);
}

#[test]
fn requests_that_end_while_held_are_not_resumed() {
    let process = Process::at_ms(1_000);
    let delay = policy("slow", json!({"delay": {"fixed_delay_ms": 20}}));
    let (mut vm, host) = vm_with(&process, &[delay]);
    let mut done = RequestState::new(7);
    let mut vanished = RequestState::new(8);
    let mut kept = RequestState::new(9);
    for request in [&mut done, &mut vanished, &mut kept] {
        assert_eq!(vm.on_request_headers(request, GET), Action::Pause);
    }
    // 7 ends cleanly (on_done); 8's context is gone without the VM hearing of it.
    vm.on_request_done(&done);
    host.end_context(8);
    process.advance_ms(20);
    vm.on_tick();
    assert_eq!(host.calls(), [Call::Resume { context: 9 }]);
    assert_eq!(vm.held(), 0);
    assert_eq!(host.records("boifi_fault_delay_ms.policy.slow"), [20, 20]);
}

#[test]
fn the_kill_switch_releases_every_held_request_at_once() {
    let process = Process::at_ms(1_000);
    let both = policy(
        "both",
        json!({"delay": {"fixed_delay_ms": 60000}, "abort": {"httpStatus": 503}}),
    );
    let (mut vm, host) = vm_with(&process, std::slice::from_ref(&both));
    let mut first = RequestState::new(7);
    let mut second = RequestState::new(8);
    vm.on_request_headers(&mut first, GET);
    vm.on_request_headers(&mut second, GET);
    assert_eq!(vm.held(), 2);
    process.advance_ms(30);
    answer(&mut vm, &host, Some("200"), &snapshot(6, true, &[both]));
    assert_eq!(host.gauge(metrics::HALTED), Some(1));
    let calls = host.calls();
    let released: Vec<&Call> = calls
        .iter()
        .filter(|c| !matches!(c, Call::Dispatch { .. }))
        .collect();
    // Forwarded, not aborted: halted means no fault at all.
    assert_eq!(
        released,
        [&Call::Resume { context: 7 }, &Call::Resume { context: 8 }]
    );
    assert_eq!(vm.held(), 0);
    assert_eq!(host.records("boifi_fault_delay_ms.policy.both"), [30, 30]);
    // While halted nothing is decided, nothing read.
    let mut third = RequestState::new(9);
    assert_eq!(vm.on_request_headers(&mut third, GET), Action::Continue);
}

#[test]
fn rejected_policies_are_counted_and_the_rest_apply() {
    let process = Process::at_ms(1_000);
    let bad = policy("bad", json!({"abort": {"httpStatus": 42}}));
    let good = policy("good", json!({"abort": {"httpStatus": 503}}));
    let other = json!({"metadata": {"name": "other"},
        "spec": {"selector": {"service": "ratings"}, "rules": [{"fault": {"abort": {"httpStatus": 503}}}]}});
    let (vm, host) = vm_with(&process, &[bad, good, other]);
    assert_eq!(host.counter(metrics::POLICIES_REJECTED), 1);
    let names: Vec<&str> = vm.policies().policies().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["good"], "selected for this workload only");
}

#[test]
fn held_requests_are_capped_and_counted() {
    let process = Process::at_ms(1_000);
    let mut capped = policy("slow", json!({"delay": {"fixed_delay_ms": 60000}}));
    capped["spec"]["max_held_requests"] = json!(2);
    let (mut vm, host) = vm_with(&process, &[capped]);
    let mut requests: Vec<RequestState> = (7..10).map(RequestState::new).collect();
    let actions: Vec<Action> = requests
        .iter_mut()
        .map(|request| vm.on_request_headers(request, GET))
        .collect();
    // Two held, the third passes at once, unfaulted and counted.
    assert_eq!(actions, [Action::Pause, Action::Pause, Action::Continue]);
    assert_eq!(vm.held(), 2);
    assert_eq!(host.counter(metrics::HELD_OVERFLOW), 1);
    assert_eq!(host.counter(metrics::HELD_REQUESTS), 2);
    assert_eq!(
        host.counter("boifi_faults_injected.fault_type.delay.policy.slow"),
        2
    );
    // A request that goes away frees its place; the gauge follows.
    vm.on_request_done(&requests[0]);
    assert_eq!(host.counter(metrics::HELD_REQUESTS), 1);
    let mut next = RequestState::new(10);
    assert_eq!(vm.on_request_headers(&mut next, GET), Action::Pause);
    process.advance_ms(60_000);
    vm.on_tick();
    assert_eq!(vm.held(), 0);
    assert_eq!(host.counter(metrics::HELD_REQUESTS), 0);
}

#[test]
fn grpc_requests_get_a_grpc_reply() {
    let process = Process::at_ms(1_000);
    let abort = policy(
        "p1",
        json!({"abort": {"grpcStatus": "UNAVAILABLE", "body": "down"}}),
    );
    let (mut vm, host) = vm_with(&process, &[abort]);
    host.grpc_requests(true);
    let mut request = RequestState::new(3);
    assert_eq!(vm.on_request_headers(&mut request, GET), Action::Pause);
    let calls = host.calls();
    let [Call::GrpcReply {
        code,
        message,
        headers,
        ..
    }] = &calls[..]
    else {
        panic!("{calls:?}");
    };
    assert_eq!((*code, message.as_deref()), (14, Some("down")));
    assert!(headers.contains(&("x-boifi-fault".to_owned(), "p1".to_owned())));
}

#[test]
fn request_sampling_without_a_request_id_is_counted() {
    let process = Process::at_ms(1_000);
    let half = policy(
        "p1",
        json!({"percentage": 50, "abort": {"httpStatus": 503}}),
    );
    let (mut vm, host) = vm_with(&process, &[half]);
    let mut request = RequestState::new(3);
    vm.on_request_headers(&mut request, GET);
    assert_eq!(host.counter(metrics::NO_REQUEST_ID), 1);
}

/// The report headers of the polls among `calls`, by name.
fn report_headers(calls: &[Call]) -> Vec<BTreeMap<String, String>> {
    FakeHost::poll_headers(calls)
        .into_iter()
        .map(|headers| headers.iter().cloned().collect())
        .collect()
}

#[test]
fn every_poll_reports_the_sidecar_and_the_counts_of_every_vm() {
    let process = Process::at_ms(1_000);
    let (mut leader, leader_host) = vm(&process);
    let (mut follower, _) = numbered_vm(&process, ROOT + 1);
    leader.on_tick();
    let first = report_headers(&leader_host.calls());
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].get(SIDECAR_HEADER).map(String::as_str),
        Some(
            r#"{"pod":"reviews-7d9f5c-00000","namespace":"demo","workload":"reviews","labels":{"app":"reviews"}}"#
        )
    );
    assert!(
        !first[0].contains_key(INJECTED_HEADER),
        "nothing injected yet"
    );

    let abort = policy("p1", json!({"abort": {"httpStatus": 503}}));
    answer(
        &mut leader,
        &leader_host,
        Some("200"),
        &snapshot(5, false, &[abort]),
    );
    let next = report_headers(&leader_host.calls());
    assert_eq!(next.len(), 1, "the next poll goes out at once");
    assert!(!next[0].contains_key(INJECTED_HEADER));
    process.advance_ms(lease::SYNC_MS);
    follower.on_tick();
    assert_eq!(follower.policies().revision(), 5);

    // Faults on both VMs; the leader reports the sidecar's total from Envoy's stats.
    for id in 10..13 {
        let mut request = RequestState::new(id);
        assert_eq!(
            follower.on_request_headers(&mut request, GET),
            Action::Pause
        );
    }
    let mut request = RequestState::new(20);
    assert_eq!(leader.on_request_headers(&mut request, GET), Action::Pause);
    let stat = metrics::faults_injected("p1", FaultType::Abort);
    assert_eq!(leader_host.process_stat(&stat), 4);
    leader_host.calls();
    // The wait runs out (an early answer would be paced).
    let timeout = wire::sse::id_only("timeout", 5);
    process.advance_ms(10_000);
    answer(&mut leader, &leader_host, Some("200"), &timeout);
    let reported = report_headers(&leader_host.calls());
    assert_eq!(
        reported[0].get(INJECTED_HEADER).map(String::as_str),
        Some(r#"{"p1":[4,0]}"#)
    );
    assert!(reported[0].contains_key(SIDECAR_HEADER), "on every poll");

    // That poll fails: the same counts go again with the retry.
    answer(&mut leader, &leader_host, Some("503"), b"");
    process.advance_ms(leader.poller().unwrap().wake_at_ms() - process.now_ms());
    leader.on_tick();
    let retried = report_headers(&leader_host.calls());
    assert_eq!(
        retried[0].get(INJECTED_HEADER).map(String::as_str),
        Some(r#"{"p1":[4,0]}"#)
    );
    // Answered: acknowledged, not sent again until the counts change.
    process.advance_ms(10_000);
    answer(&mut leader, &leader_host, Some("200"), &timeout);
    let after = report_headers(&leader_host.calls());
    assert!(!after[0].contains_key(INJECTED_HEADER), "{after:?}");
}

#[test]
fn labels_that_cannot_be_reported_are_left_out() {
    let process = Process::at_ms(1_000);
    let mut unknown = identity();
    unknown.labels_known = false;
    let mut many = identity();
    many.workload.labels = (0..100)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    for (resolved, dropped) in [(unknown, 0), (many, 1)] {
        let host = FakeHost::new(&process);
        let mut vm = Vm::new(host.clone(), ROOT);
        assert!(vm.configure(Some(CONFIG), || resolved));
        vm.on_tick();
        let headers = report_headers(&host.calls());
        let identity = &headers[0][SIDECAR_HEADER];
        assert!(!identity.contains("labels"), "{identity}");
        assert!(identity.contains(r#""pod":"reviews-7d9f5c-00000""#));
        assert_eq!(host.gauge(metrics::REPORT_LABELS_DROPPED), Some(dropped));
        process.set(&lease::Keys::default().lease, b"", None);
    }
    // No pod at all: polls go without reports.
    let host = FakeHost::new(&process);
    let mut vm = Vm::new(host.clone(), ROOT + 1);
    let mut nameless = identity();
    nameless.pod = String::new();
    assert!(vm.configure(Some(CONFIG), || nameless));
    vm.on_tick();
    assert_eq!(report_headers(&host.calls()), [BTreeMap::new()]);
}
