//! Every route and status code of the contract, at the service boundary, on the embedded
//! store in a temp dir.

mod common;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use boifi_policy_api::{app, AppState, Auth};
use boifi_tests::prometheus::promtool_check_metrics;
use common::*;
use serde_json::{json, Value};

/// Every route of the contract with the methods it serves.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/health", &["get"]),
    ("/v1/ready", &["get"]),
    ("/metrics", &["get"]),
    ("/v1/openapi.json", &["get"]),
    ("/v1/policies", &["get", "post"]),
    ("/v1/policies/{name}", &["get", "put", "delete"]),
    ("/v1/halt", &["get", "post", "delete"]),
    ("/v1/sidecars", &["get"]),
    ("/v1/audit", &["get"]),
];

/// Asserts the store holds no policy and the audit trail no entry: what was tried wrote nothing.
async fn assert_nothing_written<S, B>(app: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let read = |uri: &str| TestRequest::get().uri(uri).insert_header(bearer(READER));
    let list = send(app, read("/v1/policies")).await;
    assert_eq!(list.body["policies"], json!([]));
    let audit = send(app, read("/v1/audit")).await;
    assert_eq!(audit.body, json!({ "entries": [] }), "no write, no entry");
}

#[actix_web::test]
async fn create_get_replace_list_delete_round_trip() {
    let (app, clock, _dir) = embedded_app().await;

    let created = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(policy("reviews-abort")),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header(header::LOCATION),
        Some("/v1/policies/reviews-abort")
    );
    let rev1 = created.body["status"]["revision"].as_u64().unwrap();
    assert_eq!(
        created.header(header::ETAG),
        Some(format!("\"{rev1}\"").as_str())
    );
    assert_eq!(created.body["status"]["created_at_ms"], T0_MS);
    assert_eq!(created.body["spec"], policy("reviews-abort")["spec"]);

    let got = send(
        &app,
        TestRequest::get()
            .uri("/v1/policies/reviews-abort")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, created.body);
    assert_eq!(
        got.header(header::ETAG),
        Some(format!("\"{rev1}\"").as_str())
    );

    // Replace through POST: 200, created_at kept, updated_at from the server's clock.
    clock.advance_ms(5_000);
    let mut changed = policy("reviews-abort");
    changed["spec"]["rules"][0]["fault"]["percentage"] = json!(25);
    let replaced = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(&changed),
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let rev2 = replaced.body["status"]["revision"].as_u64().unwrap();
    assert!(rev2 > rev1);
    assert_eq!(replaced.body["status"]["created_at_ms"], T0_MS);
    assert_eq!(replaced.body["status"]["updated_at_ms"], T0_MS + 5_000);
    assert_eq!(
        replaced.body["spec"]["rules"][0]["fault"]["percentage"],
        25.0
    );

    // PUT creates a second one, then replaces it.
    let put = |body: Value| {
        TestRequest::put()
            .uri("/v1/policies/ratings-delay")
            .insert_header(bearer(WRITER))
            .set_json(body)
    };
    assert_eq!(send(&app, put(policy("ratings-delay"))).await.status, 201);
    assert_eq!(send(&app, put(policy("ratings-delay"))).await.status, 200);

    let list = send(
        &app,
        TestRequest::get()
            .uri("/v1/policies")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(list.status, 200);
    let names: Vec<&str> = list.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ratings-delay", "reviews-abort"]);
    assert_eq!(list.body["policies"][1], replaced.body);

    let delete = || {
        TestRequest::delete()
            .uri("/v1/policies/reviews-abort")
            .insert_header(bearer(WRITER))
    };
    let deleted = send(&app, delete()).await;
    assert_eq!(deleted.status, 204);
    send(&app, delete()).await.assert_error(404, "not_found");
    send(
        &app,
        TestRequest::get()
            .uri("/v1/policies/reviews-abort")
            .insert_header(bearer(READER)),
    )
    .await
    .assert_error(404, "not_found");
    let list = send(
        &app,
        TestRequest::get()
            .uri("/v1/policies")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(list.body["policies"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn halt_sets_reads_and_clears_the_kill_switch() {
    let (app, _, _dir) = embedded_app().await;
    let halt = |req: TestRequest, token| req.uri("/v1/halt").insert_header(bearer(token));

    let initial = send(&app, halt(TestRequest::get(), READER)).await;
    assert_eq!(initial.status, 200);
    assert_eq!(initial.body["halted"], false);

    let set = send(&app, halt(TestRequest::post(), WRITER)).await;
    assert_eq!(set.status, 200);
    assert_eq!(set.body["halted"], true);
    let set_rev = set.body["revision"].as_u64().unwrap();

    let read = send(&app, halt(TestRequest::get(), READER)).await;
    assert_eq!(read.body, json!({ "halted": true, "revision": set_rev }));

    let cleared = send(&app, halt(TestRequest::delete(), WRITER)).await;
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.body["halted"], false);
    assert!(cleared.body["revision"].as_u64().unwrap() > set_rev);
    let read = send(&app, halt(TestRequest::get(), READER)).await;
    assert_eq!(read.body["halted"], false);
}

#[actix_web::test]
async fn a_bad_policy_gets_one_400_listing_every_problem() {
    let (app, _, _dir) = embedded_app().await;
    let body = json!({
        "metadata": { "name": "Bad_Name!", "owner": "me" },
        "spec": {
            "rules": [
                { "fault": { "percentage": 150, "abort": { "httpStatus": 700 } } },
                { "match": { "path": { "regex": "(" } }, "fault": {} }
            ]
        }
    });
    let reply = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(&body),
    )
    .await;
    reply.assert_error(400, "invalid_request");
    let fields = reply.fields();
    for want in [
        "metadata.owner",
        "metadata.name",
        "spec.rules[0].fault.percentage",
        "spec.rules[0].fault.abort.httpStatus",
        "spec.rules[1].match.path.regex",
        "spec.rules[1].fault",
    ] {
        assert!(fields.iter().any(|f| f == want), "{want} not in {fields:?}");
    }
    for detail in reply.body["details"].as_array().unwrap() {
        assert!(!detail["message"].as_str().unwrap().is_empty(), "{detail}");
    }

    // Nothing was stored.
    assert_nothing_written(&app).await;
}

#[actix_web::test]
async fn put_requires_the_body_name_to_match_the_path() {
    let (app, _, _dir) = embedded_app().await;
    let reply = send(
        &app,
        TestRequest::put()
            .uri("/v1/policies/other")
            .insert_header(bearer(WRITER))
            .set_json(policy("reviews-abort")),
    )
    .await;
    reply.assert_error(400, "invalid_request");
    assert_eq!(reply.fields(), ["metadata.name"]);
}

#[actix_web::test]
async fn malformed_bodies_are_400_in_the_error_shape() {
    let (app, _, _dir) = embedded_app().await;
    for body in [
        "",
        "{",
        "[1,2]",
        "{\"metadata\":{\"name\":\"x\"},\"spec\":{\"rules\":7}}",
    ] {
        let reply = send(
            &app,
            TestRequest::post()
                .uri("/v1/policies")
                .insert_header(bearer(WRITER))
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .set_payload(body),
        )
        .await;
        reply.assert_error(400, "invalid_request");
        assert!(!reply.fields().is_empty(), "{body}: {}", reply.body);
    }
}

#[actix_web::test]
async fn missing_and_unknown_tokens_are_401_and_readers_may_not_write() {
    let (app, _, _dir) = embedded_app().await;
    let valid = policy("reviews-abort");
    let requests = || {
        vec![
            (
                "GET /v1/policies",
                TestRequest::get().uri("/v1/policies"),
                false,
            ),
            ("GET one", TestRequest::get().uri("/v1/policies/x"), false),
            ("GET /v1/halt", TestRequest::get().uri("/v1/halt"), false),
            ("GET /v1/audit", TestRequest::get().uri("/v1/audit"), false),
            (
                "POST /v1/policies",
                TestRequest::post().uri("/v1/policies").set_json(&valid),
                true,
            ),
            (
                "PUT one",
                TestRequest::put()
                    .uri("/v1/policies/reviews-abort")
                    .set_json(&valid),
                true,
            ),
            (
                "DELETE one",
                TestRequest::delete().uri("/v1/policies/reviews-abort"),
                true,
            ),
            ("POST /v1/halt", TestRequest::post().uri("/v1/halt"), true),
            (
                "DELETE /v1/halt",
                TestRequest::delete().uri("/v1/halt"),
                true,
            ),
        ]
    };
    for (what, req, _) in requests() {
        let reply = send(&app, req).await;
        reply.assert_error(401, "unauthorized");
        let challenge = reply.header(header::WWW_AUTHENTICATE).unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
    }
    for (what, req, _) in requests() {
        let reply = send(&app, req.insert_header(bearer("unknown-token-0123456789"))).await;
        reply.assert_error(401, "unauthorized");
        assert!(
            reply
                .header(header::WWW_AUTHENTICATE)
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );
    }
    for (what, req, write) in requests() {
        let reply = send(&app, req.insert_header(bearer(READER))).await;
        if write {
            reply.assert_error(403, "forbidden");
        } else {
            assert!(
                reply.status == 200 || reply.status == 404,
                "{what}: {}",
                reply.status
            );
        }
    }
    // The reader's attempts changed nothing.
    let halt = send(
        &app,
        TestRequest::get()
            .uri("/v1/halt")
            .insert_header(bearer(READER)),
    )
    .await;
    assert_eq!(halt.body["halted"], false);
    assert_nothing_written(&app).await;
}

#[actix_web::test]
async fn probes_metrics_and_openapi_need_no_token() {
    let (app, _, _dir) = embedded_app().await;
    let health = send(&app, TestRequest::get().uri("/v1/health")).await;
    assert_eq!(
        (health.status.as_u16(), health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = send(&app, TestRequest::get().uri("/v1/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["store"], "embedded");
    assert_eq!(
        send(&app, TestRequest::get().uri("/metrics")).await.status,
        200
    );
    assert_eq!(
        send(&app, TestRequest::get().uri("/v1/openapi.json"))
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn ready_is_503_when_the_store_is_unreachable() {
    // etcd connects lazily; nothing listens on this port, so ping fails.
    let (app, _) = app_on(unreachable_etcd().await).await;
    let started = std::time::Instant::now();
    let reply = send(&app, TestRequest::get().uri("/v1/ready")).await;
    reply.assert_error(503, "unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        send(&app, TestRequest::get().uri("/v1/health"))
            .await
            .status,
        200
    );
    // Reads that need the store say so in the same shape.
    send(
        &app,
        TestRequest::get()
            .uri("/v1/policies")
            .insert_header(bearer(READER)),
    )
    .await
    .assert_error(503, "unavailable");
}

#[actix_web::test]
async fn unknown_paths_and_methods_get_json_404_and_405_with_allow() {
    let (app, _, _dir) = embedded_app().await;
    send(&app, TestRequest::get().uri("/v2/nothing"))
        .await
        .assert_error(404, "not_found");
    for (path, methods) in ROUTES {
        let uri = path.replace("{name}", "p");
        let allow = methods
            .iter()
            .map(|m| m.to_uppercase())
            .collect::<Vec<_>>()
            .join(", ");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"] {
            if methods.contains(&method.to_lowercase().as_str()) {
                continue;
            }
            let req = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(&uri)
                .insert_header(bearer(WRITER));
            let reply = send(&app, req).await;
            reply.assert_error(405, "method_not_allowed");
            assert_eq!(
                reply.header(header::ALLOW),
                Some(allow.as_str()),
                "{method} {uri}"
            );
        }
    }
}

#[actix_web::test]
async fn preconditions_give_409_on_mismatch_and_400_when_malformed() {
    let (app, _, _dir) = embedded_app().await;
    let post = |pre: Option<(header::HeaderName, &str)>| {
        let mut req = TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(policy("p1"));
        if let Some((name, value)) = pre {
            req = req.insert_header((name, value.to_owned()));
        }
        req
    };

    // If-If-None-Match: * creates once, then conflicts.
    assert_eq!(
        send(&app, post(Some((header::IF_NONE_MATCH, "*"))))
            .await
            .status,
        201
    );
    let again = send(&app, post(Some((header::IF_NONE_MATCH, "*")))).await;
    again.assert_error(409, "conflict");

    let current = send(
        &app,
        TestRequest::get()
            .uri("/v1/policies/p1")
            .insert_header(bearer(READER)),
    )
    .await;
    let etag = current.header(header::ETAG).unwrap().to_owned();
    let rev: u64 = etag.trim_matches('"').parse().unwrap();
    assert!(again.body["message"]
        .as_str()
        .unwrap()
        .contains(&rev.to_string()));

    // A stale revision conflicts on POST, PUT and DELETE and names the current one.
    let stale = (rev + 1000).to_string();
    let put = TestRequest::put()
        .uri("/v1/policies/p1")
        .insert_header(bearer(WRITER))
        .insert_header((header::IF_MATCH, stale.clone()))
        .set_json(policy("p1"));
    let delete = TestRequest::delete()
        .uri("/v1/policies/p1")
        .insert_header(bearer(WRITER))
        .insert_header((header::IF_MATCH, stale.clone()));
    for req in [post(Some((header::IF_MATCH, stale.as_str()))), put, delete] {
        let reply = send(&app, req).await;
        reply.assert_error(409, "conflict");
        assert!(reply.body["message"]
            .as_str()
            .unwrap()
            .contains(&rev.to_string()));
    }

    // The ETag as sent back (quoted) is accepted.
    let replaced = send(&app, post(Some((header::IF_MATCH, etag.as_str())))).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let rev2 = replaced.body["status"]["revision"].as_u64().unwrap();

    // Malformed preconditions are 400 and change nothing.
    for (name, value) in [
        (header::IF_MATCH, "abc"),
        (header::IF_MATCH, "W/\"1\""),
        (header::IF_NONE_MATCH, "\"1\""),
    ] {
        send(&app, post(Some((name, value))))
            .await
            .assert_error(400, "bad_request");
    }
    let delete_bad = TestRequest::delete()
        .uri("/v1/policies/p1")
        .insert_header(bearer(WRITER))
        .insert_header((header::IF_MATCH, "nope"));
    send(&app, delete_bad)
        .await
        .assert_error(400, "bad_request");

    // Unconditional delete of the right revision works.
    let delete_ok = TestRequest::delete()
        .uri("/v1/policies/p1")
        .insert_header(bearer(WRITER))
        .insert_header((header::IF_MATCH, rev2.to_string()));
    assert_eq!(send(&app, delete_ok).await.status, 204);
}

#[actix_web::test]
async fn bodies_over_one_mebibyte_are_413_in_the_error_shape() {
    let (app, _, _dir) = embedded_app().await;
    let big = vec![b' '; 1024 * 1024 + 1];
    for req in [
        TestRequest::post().uri("/v1/policies"),
        TestRequest::put().uri("/v1/policies/x"),
    ] {
        let reply = send(
            &app,
            req.insert_header(bearer(WRITER))
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .set_payload(big.clone()),
        )
        .await;
        reply.assert_error(413, "payload_too_large");
    }
}

#[actix_web::test]
async fn expired_rules_are_reported_expired_by_the_server_clock() {
    let (app, clock, _dir) = embedded_app().await;
    let mut body = policy("short");
    body["spec"]["rules"][0]["fault"]["duration_seconds"] = json!(60);
    let rules = body["spec"]["rules"].as_array_mut().unwrap();
    rules.push(json!({ "fault": { "delay": { "fixed_delay_ms": 10 } } }));
    let created = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(&body),
    )
    .await;
    assert_eq!(created.status, 201);
    let status = &created.body["status"];
    assert_eq!(status["rules"][0]["expires_at_ms"], T0_MS + 60_000);
    assert_eq!(status["rules"][0]["expired"], false);
    assert!(status["rules"][1].get("expires_at_ms").is_none());

    let read = || async {
        let one = send(
            &app,
            TestRequest::get()
                .uri("/v1/policies/short")
                .insert_header(bearer(READER)),
        )
        .await;
        let all = send(
            &app,
            TestRequest::get()
                .uri("/v1/policies")
                .insert_header(bearer(READER)),
        )
        .await;
        (
            one.body["status"]["rules"].clone(),
            all.body["policies"][0]["status"]["rules"].clone(),
        )
    };
    clock.set(T0_MS + 59_999);
    let (one, all) = read().await;
    assert_eq!(
        (one[0]["expired"].clone(), all[0]["expired"].clone()),
        (json!(false), json!(false))
    );
    clock.set(T0_MS + 60_000);
    let (one, all) = read().await;
    assert_eq!(
        (one[0]["expired"].clone(), all[0]["expired"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        one[1]["expired"], false,
        "a rule without duration never expires"
    );
}

#[actix_web::test]
async fn metrics_count_requests_by_route_pattern_and_pass_promtool() {
    let (app, _, _dir) = embedded_app().await;
    let create = |name: &str| {
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(policy(name))
    };
    assert_eq!(send(&app, create("a")).await.status, 201);
    assert_eq!(send(&app, create("b")).await.status, 201);
    for name in ["a", "zzz"] {
        let req = TestRequest::get()
            .uri(&format!("/v1/policies/{name}"))
            .insert_header(bearer(READER));
        send(&app, req).await;
    }
    send(&app, TestRequest::get().uri("/v1/policies")).await; // 401

    let res = test::call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();

    for line in [
        r#"boifi_http_requests_total{method="POST",route="/v1/policies",status="201"} 2"#,
        r#"boifi_http_requests_total{method="GET",route="/v1/policies/{name}",status="200"} 1"#,
        r#"boifi_http_requests_total{method="GET",route="/v1/policies/{name}",status="404"} 1"#,
        r#"boifi_http_requests_total{method="GET",route="/v1/policies",status="401"} 1"#,
        r#"boifi_http_request_duration_seconds_count{method="POST",route="/v1/policies",status="201"} 2"#,
        "boifi_policies 2",
        "boifi_halted 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(
        !text.contains("route=\"/v1/policies/zzz\""),
        "raw path used as a label"
    );

    promtool_check_metrics(&text);
}

#[actix_web::test]
async fn store_errors_are_counted_by_operation() {
    let (state, _) = state_on(unreachable_etcd().await);
    let metrics = Arc::clone(&state.metrics);
    let app = test::init_service(app(state)).await;
    send(
        &app,
        TestRequest::get()
            .uri("/v1/halt")
            .insert_header(bearer(READER)),
    )
    .await
    .assert_error(503, "unavailable");
    let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
    assert!(
        text.contains(r#"boifi_store_errors_total{kind="unavailable",operation="halt_state"} 1"#),
        "{text}"
    );
}

#[actix_web::test]
async fn openapi_document_lists_every_route() {
    let (app, _, _dir) = embedded_app().await;
    let doc = send(&app, TestRequest::get().uri("/v1/openapi.json"))
        .await
        .body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in ROUTES {
        for method in *methods {
            assert!(
                paths[*path].get(*method).is_some(),
                "{method} {path} missing"
            );
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    let routes: usize = ROUTES.iter().map(|(_, m)| m.len()).sum();
    assert_eq!(
        documented, routes,
        "document has routes the server does not serve"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Policy",
        "ErrorBody",
        "FieldError",
        "PolicyList",
        "HaltState",
        "AuditList",
        "AuditRecord",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[actix_web::test]
async fn every_documented_route_is_served() {
    // The other direction: what the document promises, the app answers (not 404/405).
    let (app, _, _dir) = embedded_app().await;
    for (path, methods) in ROUTES {
        let uri = path.replace("{name}", "p");
        for method in *methods {
            let req = match *method {
                "get" => TestRequest::get(),
                "post" => TestRequest::post(),
                "put" => TestRequest::put(),
                _ => TestRequest::delete(),
            };
            let reply = send(&app, req.uri(&uri).insert_header(bearer(READER))).await;
            assert!(
                ![404, 405].contains(&reply.status.as_u16())
                    || reply.body["error"] == "not_found"
                        && reply.body["message"]
                            .as_str()
                            .unwrap()
                            .starts_with("policy"),
                "{method} {uri}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
}

#[actix_web::test]
async fn with_auth_disabled_anyone_writes_as_anonymous() {
    let (store, _dir) = embedded();
    let state = AppState::new(store, Auth::disabled()).unwrap();
    let app = test::init_service(app(state)).await;
    let reply = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .set_json(policy("open")),
    )
    .await;
    assert_eq!(reply.status, 201);
}

#[actix_web::test]
async fn concurrent_unconditional_writes_all_succeed_and_one_creates() {
    let (app, _, _dir) = embedded_app().await;
    let writes = (0..8).map(|i| {
        let mut body = policy("contended");
        body["spec"]["rules"][0]["fault"]["percentage"] = json!(f64::from(i));
        send(
            &app,
            TestRequest::post()
                .uri("/v1/policies")
                .insert_header(bearer(WRITER))
                .set_json(body),
        )
    });
    let replies = futures::future::join_all(writes).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    let created_at: Vec<&Value> = replies
        .iter()
        .map(|r| &r.body["status"]["created_at_ms"])
        .collect();
    assert!(
        created_at.iter().all(|c| **c == json!(T0_MS)),
        "{created_at:?}"
    );
}
