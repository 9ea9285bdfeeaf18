//! Policies and the halt flag survive a restart of the service, on both stores: write through
//! the API, drop the app and the store, reopen, read back through the API. On etcd, also
//! across a restart of etcd itself.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::test::TestRequest;
use boifi_store::{open_store, AuditRetention, EmbeddedStore, PolicyStore, StoreSettings};
use boifi_tests::{wait_until_async, EtcdServer};
use common::*;
use serde_json::Value;

/// Creates two policies and sets the halt flag; returns the two policies as the API
/// returned them.
async fn write_some(store: Arc<dyn PolicyStore>) -> Vec<Value> {
    let (app, _) = app_on(store).await;
    let mut written = Vec::new();
    for name in ["alpha", "beta"] {
        let reply = send(
            &app,
            TestRequest::post()
                .uri("/v1/policies")
                .insert_header(bearer(WRITER))
                .set_json(policy(name)),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        written.push(reply.body);
    }
    let halt = send(
        &app,
        TestRequest::post()
            .uri("/v1/halt")
            .insert_header(bearer(WRITER)),
    )
    .await;
    assert_eq!(halt.status, 200);
    written
}

/// Reads everything back through a fresh app on `store`.
async fn read_back(store: Arc<dyn PolicyStore>) -> (Vec<Value>, Value) {
    let (app, _) = app_on(store).await;
    let list = send(
        &app,
        TestRequest::get()
            .uri("/v1/policies")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let halt = send(
        &app,
        TestRequest::get()
            .uri("/v1/halt")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(halt.status, 200, "{}", halt.body);
    (
        list.body["policies"].as_array().unwrap().clone(),
        halt.body["halted"].clone(),
    )
}

#[actix_web::test]
async fn embedded_store_keeps_policies_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_some(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
    // The first app and store are dropped: the store's lock is released, as at process exit.
    let reopened = Arc::new(EmbeddedStore::open(dir.path()).expect("reopen after drop"));
    let (policies, halted) = read_back(reopened).await;
    assert_eq!(policies, written);
    assert_eq!(halted, true);
}

fn etcd_settings(etcd: &EtcdServer) -> StoreSettings {
    StoreSettings {
        etcd_endpoints: vec![etcd.endpoint()],
        etcd_prefix: "/boifi-test/".into(),
        data_dir: "unused".into(),
        audit_retention: AuditRetention::default(),
    }
}

#[actix_web::test]
async fn etcd_store_keeps_policies_across_service_and_etcd_restarts() {
    let mut etcd = EtcdServer::start();
    let settings = etcd_settings(&etcd);
    let written = write_some(open_store(&settings).await.unwrap()).await;

    // Service restart: a new store client and app.
    let (policies, halted) = read_back(open_store(&settings).await.unwrap()).await;
    assert_eq!(policies, written);
    assert_eq!(halted, true);

    // etcd restart (killed, same data dir): a service that kept running recovers, and a
    // freshly started one reads the same data.
    let survivor = open_store(&settings).await.unwrap();
    etcd.restart();
    let recovered = wait_until_async(Instant::now() + Duration::from_secs(30), || {
        let store = Arc::clone(&survivor);
        async move {
            tokio::time::timeout(Duration::from_secs(2), store.ping())
                .await
                .is_ok_and(|r| r.is_ok())
        }
    })
    .await;
    assert!(recovered, "store did not reconnect to the restarted etcd");
    let (policies, halted) = read_back(survivor).await;
    assert_eq!(policies, written);
    assert_eq!(halted, true);
    let (policies, _) = read_back(open_store(&settings).await.unwrap()).await;
    assert_eq!(policies, written);
}
