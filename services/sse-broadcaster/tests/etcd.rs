//! The broadcaster on a real etcd (started by the test on free loopback ports).

mod common;

use boifi_sse_broadcaster::Settings;
use boifi_tests::services::{deadline, Services};
use boifi_tests::EtcdServer;
use common::*;

#[test]
fn changes_reach_stream_clients_in_order_and_filtered_on_etcd() {
    let etcd = EtcdServer::start();
    let services = Services::etcd(&etcd.endpoint(), Settings::default());
    scenario_changes_reach_filtered_clients(&services);
}

#[test]
fn clients_converge_across_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let services = Services::etcd(&etcd.endpoint(), Settings::default());
    services.put(&policy("a", "reviews", 0));
    let mut follower = Follower::new(services.broadcaster(), "");
    let expected = services.expected();
    assert!(follower.until(deadline(), |state| *state == expected));

    etcd.restart();
    // Written once etcd is back; the broadcaster's watch was lost and must resume.
    services.put(&policy("b", "ratings", 0));
    services.delete("a");
    services.set_halt(true);
    let expected = services.expected();
    assert!(
        follower.until(deadline(), |state| *state == expected),
        "{:?} != {expected:?}",
        follower.state
    );
    let metrics = services.metrics();
    let restarts: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("boifi_broadcaster_watch_restarts_total "))
        .and_then(|n| n.parse().ok())
        .expect("watch restarts metric");
    assert!(restarts >= 1, "{metrics}");
}
