//! YAML request bodies at the service boundary: the same policies, checks and field paths as
//! JSON, YAML's own problems with line and column, one document per request, and every file
//! in docs/examples accepted.

mod common;

use std::path::PathBuf;

use actix_web::http::header;
use actix_web::test::TestRequest;
use common::*;
use serde_json::{json, Value};

const YAML_POLICY: &str = "\
metadata:
  name: reviews-abort
  version: 1.0.0
spec:
  selector:
    namespace: demo
    service: reviews
    labels: { version: v2 }
  rules:
    - match:
        method: { exact: GET }
        path: { prefix: /api }
        headers: [ { name: x-user, exact: test } ]
      fault:
        percentage: 50.0
        duration_seconds: 300
        delay: { fixed_delay_ms: 200 }
        abort: { httpStatus: 503, body: optional, headers: { x-k: v } }
";

fn yaml_post(body: &str, content_type: &str) -> TestRequest {
    TestRequest::post()
        .uri("/v1/policies")
        .insert_header(bearer(WRITER))
        .insert_header((header::CONTENT_TYPE, content_type))
        .set_payload(body.to_owned())
}

#[actix_web::test]
async fn a_yaml_body_creates_the_same_policy_as_json() {
    let (app, _, _dir) = embedded_app().await;
    let created = send(&app, yaml_post(YAML_POLICY, "application/yaml")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["spec"], policy("reviews-abort")["spec"]);
    assert_eq!(
        created.body["metadata"],
        policy("reviews-abort")["metadata"]
    );

    // Replaced through PUT with the other YAML types and a charset.
    for content_type in ["application/x-yaml; charset=utf-8", "text/yaml"] {
        let replaced = send(
            &app,
            TestRequest::put()
                .uri("/v1/policies/reviews-abort")
                .insert_header(bearer(WRITER))
                .insert_header((header::CONTENT_TYPE, content_type))
                .set_payload(YAML_POLICY),
        )
        .await;
        assert_eq!(replaced.status, 200, "{content_type}: {}", replaced.body);
    }
}

#[actix_web::test]
async fn yaml_problems_have_the_json_field_paths() {
    let (app, _, _dir) = embedded_app().await;
    let yaml = "\
metadata: { name: Bad_Name!, owner: me }
spec:
  rules:
    - fault: { percentage: 150, abort: { httpStatus: 700 } }
    - match: { path: { regex: '(' } }
      fault: {}
";
    let json = json!({
        "metadata": { "name": "Bad_Name!", "owner": "me" },
        "spec": { "rules": [
            { "fault": { "percentage": 150, "abort": { "httpStatus": 700 } } },
            { "match": { "path": { "regex": "(" } }, "fault": {} }
        ] }
    });
    let from_yaml = send(&app, yaml_post(yaml, "application/yaml")).await;
    from_yaml.assert_error(400, "invalid_request");
    let from_json = send(
        &app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(&json),
    )
    .await;
    assert_eq!(from_yaml.body, from_json.body);
    assert!(from_yaml.fields().contains(&"metadata.owner".to_owned()));
}

#[actix_web::test]
async fn a_yaml_syntax_error_gives_line_and_column() {
    let (app, _, _dir) = embedded_app().await;
    let reply = send(
        &app,
        yaml_post("metadata:\n  name: x\n spec: [\n", "application/yaml"),
    )
    .await;
    reply.assert_error(400, "invalid_request");
    assert_eq!(reply.fields(), [""]);
    let message = reply.body["details"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("line 3, column 2: "), "{message}");
}

#[actix_web::test]
async fn a_body_of_many_yaml_documents_is_refused() {
    let (app, _, _dir) = embedded_app().await;
    let two = format!(
        "{YAML_POLICY}---\n{}",
        YAML_POLICY.replace("reviews-abort", "other")
    );
    let reply = send(&app, yaml_post(&two, "application/yaml")).await;
    reply.assert_error(400, "invalid_request");
    let message = reply.body["details"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("second YAML document") && message.contains("one policy per request"),
        "{message}"
    );
    let list = send(&app, get_as_reader("/v1/policies")).await;
    assert_eq!(list.body["policies"], json!([]), "nothing stored");
}

/// The files of docs/examples and of docs/examples/json (the JSON copy lives apart so that
/// `boifi apply -f docs/examples/` does not meet the same policy twice).
fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    let mut files = Vec::new();
    for dir in [dir.clone(), dir.join("json")] {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        files.extend(
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.is_file()),
        );
    }
    files.sort();
    files
}

#[actix_web::test]
async fn every_example_is_accepted() {
    let (app, _, _dir) = embedded_app().await;
    let files = examples();
    assert!(files.len() >= 5, "{files:?}");
    let mut created = std::collections::BTreeMap::<String, Value>::new();
    for file in files {
        let content_type = match file.extension().and_then(|e| e.to_str()) {
            Some("json") => "application/json",
            Some("yaml" | "yml") => "application/yaml",
            _ => panic!("{}: not .json or .yaml", file.display()),
        };
        let body = std::fs::read_to_string(&file).unwrap();
        let name = file.file_stem().unwrap().to_str().unwrap().to_owned();
        let reply = send(
            &app,
            TestRequest::put()
                .uri(&format!("/v1/policies/{name}"))
                .insert_header(bearer(WRITER))
                .insert_header((header::CONTENT_TYPE, content_type))
                .set_payload(body),
        )
        .await;
        assert!(
            reply.status == 201 || reply.status == 200,
            "{}: {} {}",
            file.display(),
            reply.status,
            reply.body
        );
        let previous = created.insert(format!("{name}.{content_type}"), reply.body["spec"].clone());
        assert!(previous.is_none());
    }
    // The YAML copy of the JSON example is the same policy.
    assert_eq!(
        created["reviews-abort.application/json"],
        created["reviews-abort.application/yaml"]
    );
}
