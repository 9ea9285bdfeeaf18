//! `server::run` on a real loopback listener: serves, then stops when the shutdown future
//! completes, letting the caller go on.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use boifi_policy_api::server;
use boifi_tests::http::agent;
use common::*;

#[actix_web::test]
async fn run_serves_until_the_shutdown_future_completes() {
    let (store, _dir) = embedded();
    let (state, _) = state_on(store);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server::run(listener, state, async {
        let _ = stop_rx.await;
    }));

    let url = format!("http://{addr}/v1/health");
    let status = tokio::task::spawn_blocking(move || {
        agent(Duration::from_secs(10))
            .get(&url)
            .call()
            .map(|r| r.status().as_u16())
    })
    .await
    .unwrap()
    .expect("health request");
    assert_eq!(status, 200);

    stop_tx.send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(15), running).await;
    let result = finished
        .expect("run did not return after shutdown")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
