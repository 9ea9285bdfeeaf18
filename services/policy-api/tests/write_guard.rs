//! Cross-site safety of writes at the service boundary, with auth on and off: a foreign
//! `Origin` is 403 on every write, bodies must be JSON or YAML (415), bodiless writes need no
//! `Content-Type`, and the kill switch takes an optional reason.

mod common;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::test::TestRequest;
use common::*;
use serde_json::json;

const HOST: &str = "127.0.0.1:8080";

/// Every write route, each with a body it would accept.
fn writes() -> Vec<(&'static str, TestRequest)> {
    vec![
        (
            "POST /v1/policies",
            TestRequest::post()
                .uri("/v1/policies")
                .set_json(policy("p")),
        ),
        (
            "PUT /v1/policies/p",
            TestRequest::put()
                .uri("/v1/policies/p")
                .set_json(policy("p")),
        ),
        (
            "DELETE /v1/policies/p",
            TestRequest::delete().uri("/v1/policies/p"),
        ),
        ("POST /v1/halt", TestRequest::post().uri("/v1/halt")),
        ("DELETE /v1/halt", TestRequest::delete().uri("/v1/halt")),
    ]
}

/// Nothing was written: no policy, the kill switch off.
async fn assert_untouched<S, B>(app: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let list = send(app, get_as_reader("/v1/policies")).await;
    assert_eq!(list.body["policies"], json!([]), "{}", list.body);
    let halt = send(app, get_as_reader("/v1/halt")).await;
    assert_eq!(halt.body["halted"], false);
}

#[actix_web::test]
async fn a_foreign_origin_is_refused_on_every_write_with_auth_on_or_off() {
    let (with_auth, _, _dir) = embedded_app().await;
    let (without_auth, _dir2) = embedded_app_without_auth().await;
    for origin in [
        "http://evil.example",
        "http://127.0.0.1:8081",
        "https://127.0.0.1:8080",
        "null",
    ] {
        for (what, req) in writes() {
            let req = req
                .insert_header((header::HOST, HOST))
                .insert_header((header::ORIGIN, origin))
                .insert_header(bearer(WRITER));
            let reply = send(&with_auth, req).await;
            reply.assert_error(403, "cross_origin");
            assert!(
                reply.body["message"].as_str().unwrap().contains(origin),
                "{what}: {}",
                reply.body
            );
        }
        for (_, req) in writes() {
            let req = req
                .insert_header((header::HOST, HOST))
                .insert_header((header::ORIGIN, origin));
            send(&without_auth, req)
                .await
                .assert_error(403, "cross_origin");
        }
    }
    assert_untouched(&with_auth).await;
    let halt = send(&without_auth, TestRequest::get().uri("/v1/halt")).await;
    assert_eq!(halt.body["halted"], false);
}

#[actix_web::test]
async fn the_own_origin_and_no_origin_may_write() {
    let (app, _, _dir) = embedded_app().await;
    for (origin, host) in [
        (Some("http://127.0.0.1:8080"), HOST),
        (Some("http://localhost:8080"), "localhost:8080"),
        (None, HOST),
    ] {
        let mut req = TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .insert_header((header::HOST, host))
            .set_json(policy("p"));
        if let Some(origin) = origin {
            req = req.insert_header((header::ORIGIN, origin));
        }
        let reply = send(&app, req).await;
        assert!(
            reply.status == 201 || reply.status == 200,
            "{origin:?}: {}",
            reply.body
        );
    }
    // Reads are not checked: a browser does not let the foreign page read the answer.
    let read = send(
        &app,
        get_as_reader("/v1/policies")
            .insert_header((header::HOST, HOST))
            .insert_header((header::ORIGIN, "http://evil.example")),
    )
    .await;
    assert_eq!(read.status, 200);
}

/// The two requests that `boifi serve` without tokens used to accept from any web page.
#[actix_web::test]
async fn a_text_plain_policy_and_a_form_posted_halt_are_refused_without_auth() {
    let (app, _dir) = embedded_app_without_auth().await;
    let text_plain = || {
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header((header::HOST, HOST))
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload(policy("drive-by").to_string())
    };
    send(
        &app,
        text_plain().insert_header((header::ORIGIN, "http://evil.example")),
    )
    .await
    .assert_error(403, "cross_origin");
    let reply = send(&app, text_plain()).await;
    reply.assert_error(415, "unsupported_media_type");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("application/json") && message.contains("application/yaml"),
        "{message}"
    );
    let form = || {
        TestRequest::post()
            .uri("/v1/halt")
            .insert_header((header::HOST, HOST))
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .set_payload("halt=1")
    };
    send(&app, form())
        .await
        .assert_error(415, "unsupported_media_type");
    send(
        &app,
        form().insert_header((header::ORIGIN, "http://evil.example")),
    )
    .await
    .assert_error(403, "cross_origin");
    assert_untouched(&app).await;
}

#[actix_web::test]
async fn writes_take_json_or_yaml_and_bodiless_writes_need_no_content_type() {
    let (app, _, _dir) = embedded_app().await;
    for content_type in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=iso-8859-1",
    ] {
        for (what, req) in writes() {
            let req = req
                .insert_header(bearer(WRITER))
                .insert_header((header::CONTENT_TYPE, content_type));
            let reply = send(&app, req).await;
            assert_eq!(reply.status, 415, "{what} {content_type}: {}", reply.body);
        }
    }
    // A body without a Content-Type.
    let reply = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .insert_header((header::CONTENT_LENGTH, "2"))
            .set_payload("{}"),
    )
    .await;
    reply.assert_error(415, "unsupported_media_type");
    assert_untouched(&app).await;

    // A chunked body without a Content-Type is judged once read.
    let reply = send(
        &app,
        TestRequest::post()
            .uri("/v1/halt")
            .insert_header(bearer(WRITER))
            .insert_header((header::TRANSFER_ENCODING, "chunked"))
            .set_payload("halt=1"),
    )
    .await;
    reply.assert_error(415, "unsupported_media_type");
    assert_untouched(&app).await;

    // Bodiless: the kill switch and a delete need nothing.
    let set = send(
        &app,
        TestRequest::post()
            .uri("/v1/halt")
            .insert_header(bearer(WRITER)),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let cleared = send(
        &app,
        TestRequest::delete()
            .uri("/v1/halt")
            .insert_header(bearer(WRITER))
            .insert_header((header::CONTENT_LENGTH, "0")),
    )
    .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    send(
        &app,
        TestRequest::delete()
            .uri("/v1/policies/none")
            .insert_header(bearer(WRITER)),
    )
    .await
    .assert_error(404, "not_found");
}

#[actix_web::test]
async fn the_kill_switch_takes_an_optional_reason_in_json_or_yaml() {
    let (app, _, _dir) = embedded_app().await;
    let halt = |req: TestRequest, content_type: &str, body: &str| {
        req.uri("/v1/halt")
            .insert_header(bearer(WRITER))
            .insert_header((header::CONTENT_TYPE, content_type.to_owned()))
            .set_payload(body.to_owned())
    };
    let set = send(
        &app,
        halt(
            TestRequest::post(),
            "application/json",
            r#"{"reason":"game day"}"#,
        ),
    )
    .await;
    assert_eq!(
        (set.status.as_u16(), &set.body["halted"]),
        (200, &json!(true))
    );
    let cleared = send(
        &app,
        halt(
            TestRequest::delete(),
            "application/yaml",
            "reason: drill over\n",
        ),
    )
    .await;
    assert_eq!(
        (cleared.status.as_u16(), &cleared.body["halted"]),
        (200, &json!(false))
    );
    let empty_json = send(&app, halt(TestRequest::post(), "application/json", "")).await;
    assert_eq!(empty_json.status, 200, "a blank body is no reason");

    let unknown = send(
        &app,
        halt(
            TestRequest::delete(),
            "application/json",
            r#"{"reason":"x","force":true}"#,
        ),
    )
    .await;
    unknown.assert_error(400, "invalid_request");
    assert_eq!(unknown.fields(), ["force"]);
    let long = json!({ "reason": "x".repeat(513) }).to_string();
    let too_long = send(&app, halt(TestRequest::post(), "application/json", &long)).await;
    too_long.assert_error(400, "invalid_request");
    assert_eq!(too_long.fields(), ["reason"]);
    let huge = json!({ "reason": "x".repeat(20_000) }).to_string();
    send(&app, halt(TestRequest::post(), "application/json", &huge))
        .await
        .assert_error(413, "payload_too_large");
    // The refused requests changed nothing: still halted from the blank-body POST.
    let state = send(&app, get_as_reader("/v1/halt")).await;
    assert_eq!(state.body["halted"], true);
}
