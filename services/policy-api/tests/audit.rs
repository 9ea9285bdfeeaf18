//! `GET /v1/audit` and the reasons of writes, at the service boundary: on the embedded store
//! in a temp dir and on a real etcd, with the test tokens (`ops` writes, `dashboard` reads).

mod common;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::test::TestRequest;
use boifi_store::{open_store, AuditRetention, PolicyStore, StoreSettings};
use boifi_tests::EtcdServer;
use common::*;
use serde_json::{json, Value};

/// `GET /v1/audit?<query>` as the reader.
fn audit(query: &str) -> TestRequest {
    TestRequest::get()
        .uri(&format!("/v1/audit{query}"))
        .insert_header(bearer(READER))
}

fn as_writer(req: TestRequest) -> TestRequest {
    req.insert_header(bearer(WRITER))
}

/// Writes, deletes, halts and resumes as `ops` with reasons; asserts what the trail says.
async fn who_did_what(store: Arc<dyn PolicyStore>) {
    let (app, clock) = app_on(store).await;
    let created = send(
        &app,
        as_writer(TestRequest::post().uri("/v1/policies"))
            .insert_header(("X-Boifi-Reason", "game day: reviews fail"))
            .set_json(policy("reviews-abort")),
    )
    .await;
    assert_eq!(created.status, 201);
    let created_rev = created.body["status"]["revision"].as_u64().unwrap();
    clock.advance_ms(1_000);
    let mut changed = policy("reviews-abort");
    changed["spec"]["rules"][0]["fault"]["percentage"] = json!(10);
    let replaced = send(
        &app,
        as_writer(TestRequest::put().uri("/v1/policies/reviews-abort")).set_json(changed),
    )
    .await;
    assert_eq!(replaced.status, 200);
    let replaced_rev = replaced.body["status"]["revision"].as_u64().unwrap();
    clock.advance_ms(1_000);
    let halted = send(
        &app,
        as_writer(TestRequest::post().uri("/v1/halt"))
            .set_json(json!({ "reason": "pager: error budget burnt" })),
    )
    .await;
    assert_eq!(halted.status, 200);
    let deleted = send(
        &app,
        as_writer(TestRequest::delete().uri("/v1/policies/reviews-abort"))
            .insert_header(("X-Boifi-Reason", "done")),
    )
    .await;
    assert_eq!(deleted.status, 204);
    let resumed = send(
        &app,
        as_writer(TestRequest::delete().uri("/v1/halt")).insert_header(("X-Boifi-Reason", "ok")),
    )
    .await;
    assert_eq!(resumed.status, 200);

    let trail = send(&app, audit("")).await;
    assert_eq!(trail.status, 200, "{}", trail.body);
    let entries = trail.body["entries"].as_array().unwrap();
    let summary: Vec<(&str, &str, Value, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["policy"].clone(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ops", "resume", Value::Null, json!("ok")),
            ("ops", "delete", json!("reviews-abort"), json!("done")),
            (
                "ops",
                "halt",
                Value::Null,
                json!("pager: error budget burnt")
            ),
            ("ops", "replace", json!("reviews-abort"), Value::Null),
            (
                "ops",
                "create",
                json!("reviews-abort"),
                json!("game day: reviews fail")
            ),
        ]
    );
    // Revisions are the changes' own; times are the server clock's.
    assert_eq!(entries[0]["revision"], resumed.body["revision"]);
    assert_eq!(entries[2]["revision"], halted.body["revision"]);
    assert_eq!(entries[3]["revision"], replaced_rev);
    assert_eq!(entries[4]["revision"], created_rev);
    assert_eq!(entries[4]["time"], "2024-01-01T00:00:00.000Z");
    assert_eq!(entries[3]["time"], "2024-01-01T00:00:01.000Z");
    assert_eq!(entries[0]["time"], "2024-01-01T00:00:02.000Z");
    assert!(trail.body.get("continue").is_none());
    // The token appears nowhere.
    assert!(!trail.body.to_string().contains(WRITER));

    // "Who halted the mesh?"
    let halts = send(&app, audit("?action=halt")).await;
    assert_eq!(halts.body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(halts.body["entries"][0]["actor"], "ops");
    assert_eq!(
        halts.body["entries"][0]["reason"],
        "pager: error budget burnt"
    );

    // Pages of two, following `continue`, give the same entries.
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = send(&app, audit(&query)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let got = page.body["entries"].as_array().unwrap();
        assert!(got.len() <= 2);
        paged.extend(got.iter().cloned());
        match page.body["continue"].as_str() {
            Some(token) => query = format!("?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(&paged, entries);

    let by_policy = send(&app, audit("?policy=reviews-abort&actor=ops")).await;
    assert_eq!(by_policy.body["entries"].as_array().unwrap().len(), 3);
    let nobody = send(&app, audit("?actor=dashboard")).await;
    assert_eq!(nobody.body["entries"], json!([]));
}

#[actix_web::test]
async fn the_trail_says_who_did_what_on_the_embedded_store() {
    let (store, _dir) = embedded();
    who_did_what(store).await;
}

#[actix_web::test]
async fn the_trail_says_who_did_what_on_etcd() {
    let etcd = EtcdServer::start();
    let store = open_store(&StoreSettings {
        etcd_endpoints: vec![etcd.endpoint()],
        etcd_prefix: "/boifi-audit-test/".into(),
        data_dir: "unused".into(),
        audit_retention: AuditRetention::default(),
    })
    .await
    .unwrap();
    who_did_what(store).await;
}

#[actix_web::test]
async fn bad_reasons_are_400_and_write_nothing() {
    let (app, _, _dir) = embedded_app().await;
    let long = "x".repeat(513);
    let bad: [(&str, &[u8]); 3] = [
        ("too long", long.as_bytes()),
        ("control", b"line\tbreak"),
        ("not UTF-8", b"\xff"),
    ];
    for (what, reason) in bad {
        let reply = send(
            &app,
            as_writer(TestRequest::post().uri("/v1/policies"))
                .insert_header((
                    "X-Boifi-Reason",
                    header::HeaderValue::from_bytes(reason).unwrap(),
                ))
                .set_json(policy("p")),
        )
        .await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.fields(), ["X-Boifi-Reason"], "{what}");
        let reply = send(
            &app,
            as_writer(TestRequest::post().uri("/v1/halt")).insert_header((
                "X-Boifi-Reason",
                header::HeaderValue::from_bytes(reason).unwrap(),
            )),
        )
        .await;
        assert_eq!(reply.fields(), ["X-Boifi-Reason"], "{what}");
    }
    // A reason in the body and in the header: which one is meant is unclear.
    let reply = send(
        &app,
        as_writer(TestRequest::post().uri("/v1/halt"))
            .insert_header(("X-Boifi-Reason", "a"))
            .set_json(json!({ "reason": "b" })),
    )
    .await;
    reply.assert_error(400, "invalid_request");
    assert_eq!(reply.fields(), ["reason"]);
    // A delete that finds nothing records nothing.
    let reply = send(
        &app,
        as_writer(TestRequest::delete().uri("/v1/policies/absent")),
    )
    .await;
    assert_eq!(reply.status, 404);
    let trail = send(&app, audit("")).await;
    assert_eq!(trail.body, json!({ "entries": [] }));
    let policies = send(
        &app,
        TestRequest::get()
            .uri("/v1/policies")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(policies.body["policies"], json!([]));
}

#[actix_web::test]
async fn query_problems_are_400_naming_the_parameter() {
    let (app, _, _dir) = embedded_app().await;
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?continue=abc", "continue"),
        ("?action=stop", "action"),
        ("?actor=", "actor"),
        ("?since=1", "query"),
        ("?policy=a&policy=b", "query"),
    ] {
        let reply = send(&app, audit(query)).await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.fields(), [field], "{query}");
    }
    let reply = send(&app, TestRequest::get().uri("/v1/audit")).await;
    reply.assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn with_auth_disabled_the_actor_is_anonymous() {
    let (app, _dir) = embedded_app_without_auth().await;
    let reply = send(&app, TestRequest::post().uri("/v1/halt")).await;
    assert_eq!(reply.status, 200);
    let trail = send(&app, TestRequest::get().uri("/v1/audit")).await;
    assert_eq!(trail.body["entries"][0]["actor"], "anonymous");
    assert_eq!(trail.body["entries"][0]["action"], "halt");
    assert!(trail.body["entries"][0].get("reason").is_none());
}
