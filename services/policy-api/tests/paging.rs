//! `GET /v1/policies` at scale: pages of `limit` (default 500, at most 1000) sorted by name,
//! `continue` tokens, the stream's namespace/service filter, strict query parameters.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::test::{self, TestRequest};
use boifi_policy::{Format, ValidPolicy};
use boifi_policy_api::app;
use boifi_store::{
    open_store, Attribution, AuditRetention, PolicyStore, Precondition, StoreSettings,
};
use boifi_tests::EtcdServer;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// `count` policies named `p-00000`, ... written straight into the store, 64 at a time (the
/// API's write path is tested elsewhere; this is about reading many).
async fn fill(store: &Arc<dyn PolicyStore>, count: usize) {
    let puts = (0..count).map(|i| {
        let mut body = policy(&format!("p-{i:05}"));
        // Every third policy selects namespace `other`.
        if i % 3 == 0 {
            body["spec"]["selector"]["namespace"] = json!("other");
        }
        let valid = ValidPolicy::parse(body.to_string().as_bytes(), Format::Json, None).unwrap();
        let store = Arc::clone(store);
        async move {
            let by = Attribution::new("test", None, 0).unwrap();
            store.put(&valid, Precondition::None, &by).await.unwrap()
        }
    });
    futures::stream::iter(puts)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

fn names(body: &Value) -> Vec<String> {
    body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// On etcd: the embedded store rewrites its whole file on every write, which makes 5,000
/// writes take minutes; reading is the same code on either store.
#[actix_web::test]
async fn five_thousand_policies_come_in_pages_and_limit_is_honoured() {
    let etcd = EtcdServer::start();
    let store = open_store(&StoreSettings {
        etcd_endpoints: vec![etcd.endpoint()],
        etcd_prefix: "/boifi/".into(),
        data_dir: "unused".into(),
        audit_retention: AuditRetention::default(),
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    fill(&store, 5000).await;
    eprintln!("5000 policies stored in {:?}", started.elapsed());
    let (state, _) = state_on(Arc::clone(&store));
    let app = test::init_service(app(state)).await;
    let get = |uri: String| TestRequest::get().uri(&uri).insert_header(bearer(READER));

    let ten = send(&app, get("/v1/policies?limit=10".into())).await;
    assert_eq!(ten.status, 200);
    assert_eq!(
        names(&ten.body),
        (0..10).map(|i| format!("p-{i:05}")).collect::<Vec<_>>()
    );
    assert!(ten.body["continue"].is_string());

    let res = test::call_service(&app, get("/v1/policies".into()).to_request()).await;
    let bytes = test::read_body(res).await;
    let first: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(names(&first).len(), 500, "default page");
    eprintln!("default page: {} bytes", bytes.len());
    assert!(bytes.len() < 400_000, "{} bytes", bytes.len());

    // Walk all pages at the largest limit: every name once, in order.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &token {
            Some(t) => format!("/v1/policies?limit=1000&continue={t}"),
            None => "/v1/policies?limit=1000".to_owned(),
        };
        let page = send(&app, get(uri)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(names(&page.body));
        pages += 1;
        match page.body.get("continue") {
            Some(next) => token = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 5000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");

    // The namespace filter: policies of `other` are left out.
    let demo = send(&app, get("/v1/policies?namespace=demo&limit=1000".into())).await;
    let demo_names: BTreeSet<String> = names(&demo.body).into_iter().collect();
    assert_eq!(demo_names.len(), 1000);
    assert!(!demo_names.contains("p-00000") && demo_names.contains("p-00001"));
}

#[actix_web::test]
async fn filters_use_the_stream_semantics() {
    let (app, _, _dir) = embedded_app().await;
    let put = |name: &str, selector: Value| {
        let mut body = policy(name);
        body["spec"]["selector"] = selector;
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(body)
    };
    for (name, selector) in [
        ("all", json!({})),
        ("demo-any", json!({ "namespace": "demo" })),
        (
            "demo-reviews",
            json!({ "namespace": "demo", "service": "reviews" }),
        ),
        (
            "demo-ratings",
            json!({ "namespace": "demo", "service": "ratings" }),
        ),
        (
            "prod-reviews",
            json!({ "namespace": "prod", "service": "reviews" }),
        ),
    ] {
        assert_eq!(send(&app, put(name, selector)).await.status, 201);
    }
    let list = |query: &str| get_as_reader(&format!("/v1/policies?{query}"));
    let got = send(&app, list("namespace=demo&service=reviews")).await;
    assert_eq!(names(&got.body), ["all", "demo-any", "demo-reviews"]);
    let got = send(&app, list("service=reviews")).await;
    assert_eq!(
        names(&got.body),
        ["all", "demo-any", "demo-reviews", "prod-reviews"]
    );
    let got = send(&app, list("namespace=*")).await;
    assert_eq!(names(&got.body).len(), 5, "`*` is unknown: everything");
}

#[actix_web::test]
async fn bad_query_parameters_are_400s_naming_them() {
    let (app, _, _dir) = embedded_app().await;
    for (query, field, mentions) in [
        ("limit=1001", "limit", "1000"),
        ("limit=0", "limit", "1000"),
        ("limit=x", "limit", "`x`"),
        ("continue=not-a-token", "continue", "token"),
        ("labels=a:b", "query", "`labels`"),
        ("page=2", "query", "`page`"),
        ("limit=1&limit=2", "query", "duplicate"),
    ] {
        let reply = send(&app, get_as_reader(&format!("/v1/policies?{query}"))).await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.fields(), [field], "{query}");
        let message = reply.body["details"][0]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{query}: {message}");
    }
}
