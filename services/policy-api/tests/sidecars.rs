//! Sidecar status at the service boundary: `GET /v1/sidecars` and the `status.enforcement` /
//! `status.injected` of policy reads, from a [`SidecarSource`] the test controls (two
//! replicas, one of which can fail), on a real embedded store.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::test::{self, TestRequest};
use boifi_policy::wire::{
    FaultCounts, SidecarState, SidecarStatus, SidecarsPage, SidecarsQuery, UnreachableReplica,
};
use boifi_policy_api::app;
use boifi_policy_api::sidecars::{SidecarSource, Sidecars, MIN_AGE};
use common::*;
use serde_json::{json, Value};

/// Two replicas; `b-1` can be made to fail. Counts the pages asked for.
#[derive(Default)]
struct Replicas {
    tables: Mutex<BTreeMap<String, Result<Vec<SidecarStatus>, String>>>,
    pages: AtomicUsize,
    /// The replicas serve revision 0 (they have not seen any write yet), else 100.
    behind: AtomicBool,
}

impl Replicas {
    fn set(&self, replica: &str, table: Result<Vec<SidecarStatus>, String>) {
        self.tables.lock().unwrap().insert(replica.into(), table);
    }
}

impl SidecarSource for Replicas {
    fn replicas(&self) -> Vec<Result<String, UnreachableReplica>> {
        self.tables
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .map(Ok)
            .collect()
    }

    fn page(&self, address: &str, _: &SidecarsQuery) -> Result<SidecarsPage, String> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        let sidecars = self.tables.lock().unwrap()[address].clone()?;
        Ok(SidecarsPage {
            replica: format!("sse-broadcaster-{address}"),
            revision: if self.behind.load(Ordering::SeqCst) {
                0
            } else {
                100
            },
            halted: false,
            sidecars,
            continue_token: None,
        })
    }
}

fn sidecar(pod: &str, workload: &str, version: &str, revision: u64) -> SidecarStatus {
    SidecarStatus {
        pod: pod.into(),
        namespace: "demo".into(),
        workload: workload.into(),
        labels: Some(BTreeMap::from([
            ("app".to_owned(), "reviews".to_owned()),
            ("version".to_owned(), version.to_owned()),
        ])),
        revision,
        state: SidecarState::Current,
        behind_seconds: 0.0,
        first_seen: SystemTime::now(),
        last_seen: SystemTime::now(),
        polling: true,
        injected: BTreeMap::new(),
    }
}

/// The app on an embedded store with the test tokens, its sidecar status from `replicas`
/// kept `max_age`.
async fn app_with(
    replicas: Arc<Replicas>,
    max_age: Duration,
) -> (
    impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    tempfile::TempDir,
) {
    let (store, dir) = embedded();
    let (mut state, _) = state_on(store);
    state.sidecars = Some(Arc::new(Sidecars::with_max_age(replicas, max_age)));
    (test::init_service(app(state)).await, dir)
}

fn get(path: &str) -> TestRequest {
    TestRequest::get().uri(path).insert_header(bearer(READER))
}

fn pods(body: &Value) -> Vec<&str> {
    body["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pod"].as_str().unwrap())
        .collect()
}

/// `reviews-abort` (selects demo/reviews version v2) written; returns its revision.
async fn write_policy<S, B>(app: &S) -> u64
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let reply = send(
        app,
        TestRequest::post()
            .uri("/v1/policies")
            .insert_header(bearer(WRITER))
            .set_json(policy("reviews-abort")),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        reply.body["status"].get("enforcement"),
        None,
        "a write's answer has no enforcement"
    );
    reply.body["status"]["revision"].as_u64().unwrap()
}

#[actix_web::test]
async fn policy_reads_say_which_selected_sidecars_enforce_them() {
    let replicas = Arc::new(Replicas::default());
    let (app, _dir) = app_with(replicas.clone(), Duration::ZERO).await;
    let revision = write_policy(&app).await;
    let mut counted = sidecar("reviews-v2-a", "reviews-v2", "v2", revision);
    counted.injected.insert(
        "reviews-abort".into(),
        FaultCounts {
            abort: 12,
            delay: 3,
        },
    );
    replicas.set(
        "a",
        Ok(vec![
            counted,
            sidecar("reviews-v2-b", "reviews-v2", "v2", revision - 1),
            sidecar("reviews-v1-a", "reviews-v1", "v1", 0),
        ]),
    );
    let mut other = sidecar("reviews-v2-c", "reviews-v2", "v2", revision + 5);
    other.injected.insert(
        "reviews-abort".into(),
        FaultCounts {
            abort: 30,
            delay: 0,
        },
    );
    replicas.set("b", Ok(vec![other]));

    let one = send(&app, get("/v1/policies/reviews-abort")).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(
        one.body["status"]["enforcement"],
        json!({"selected": 3, "enforcing": 2, "lagging": ["reviews-v2-b"], "lagging_count": 1})
    );
    assert_eq!(
        one.body["status"]["injected"],
        json!({"abort": 42, "delay": 3})
    );
    let list = send(&app, get("/v1/policies")).await;
    assert_eq!(
        list.body["policies"][0]["status"], one.body["status"],
        "a list says the same"
    );

    // A replica that fails is counted, not an error.
    replicas.set("b", Err("connection refused".into()));
    let one = send(&app, get("/v1/policies/reviews-abort")).await;
    assert_eq!(one.status, 200);
    assert_eq!(
        one.body["status"]["enforcement"],
        json!({"selected": 2, "enforcing": 1, "lagging": ["reviews-v2-b"], "lagging_count": 1,
               "unreachable_replicas": 1})
    );
    assert_eq!(
        one.body["status"]["injected"],
        json!({"abort": 12, "delay": 3})
    );
}

#[actix_web::test]
async fn the_sidecar_list_merges_the_replicas_and_filters() {
    let replicas = Arc::new(Replicas::default());
    let (app, _dir) = app_with(replicas.clone(), Duration::ZERO).await;
    let revision = write_policy(&app).await;
    let mut behind = sidecar("reviews-v1-a", "reviews-v1", "v1", 1);
    behind.state = SidecarState::Behind;
    replicas.set(
        "a",
        Ok(vec![
            sidecar("reviews-v2-a", "reviews-v2", "v2", revision),
            behind,
        ]),
    );
    replicas.set("b", Err("connection refused".into()));

    let all = send(&app, get("/v1/sidecars")).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(pods(&all.body), ["reviews-v1-a", "reviews-v2-a"]);
    assert_eq!(all.body["replicas"][0]["replica"], "sse-broadcaster-a");
    assert_eq!(all.body["replicas"][0]["sidecars"], 2);
    assert_eq!(
        all.body["unreachable"],
        json!([{"address": "b", "error": "connection refused"}])
    );
    assert_eq!(all.body.get("continue"), None);

    let selected = send(&app, get("/v1/sidecars?policy=reviews-abort")).await;
    assert_eq!(pods(&selected.body), ["reviews-v2-a"]);
    let behind = send(
        &app,
        get("/v1/sidecars?state=behind&namespace=demo&service=reviews"),
    )
    .await;
    assert_eq!(pods(&behind.body), ["reviews-v1-a"]);
    let page = send(&app, get("/v1/sidecars?limit=1")).await;
    assert_eq!(pods(&page.body), ["reviews-v1-a"]);
    let token = page.body["continue"].as_str().unwrap();
    let next = send(&app, get(&format!("/v1/sidecars?limit=1&continue={token}"))).await;
    assert_eq!(pods(&next.body), ["reviews-v2-a"]);
    assert_eq!(next.body.get("continue"), None);

    send(&app, get("/v1/sidecars?policy=nope"))
        .await
        .assert_error(404, "not_found");
    let bad = send(&app, get("/v1/sidecars?state=late&limit=0")).await;
    bad.assert_error(400, "invalid_request");
    assert_eq!(bad.fields(), ["state", "limit"]);
    let unknown = send(&app, get("/v1/sidecars?pod=x")).await;
    unknown.assert_error(400, "invalid_request");
    assert_eq!(unknown.fields(), ["query"]);
    send(&app, TestRequest::get().uri("/v1/sidecars"))
        .await
        .assert_error(401, "unauthorized");
    let post = send(
        &app,
        TestRequest::post()
            .uri("/v1/sidecars")
            .insert_header(bearer(WRITER)),
    )
    .await;
    post.assert_error(405, "method_not_allowed");
}

#[actix_web::test]
async fn a_burst_of_reads_gathers_once_and_a_later_read_again() {
    let replicas = Arc::new(Replicas::default());
    replicas.set(
        "a",
        Ok(vec![sidecar("reviews-v2-a", "reviews-v2", "v2", 1)]),
    );
    let (app, _dir) = app_with(replicas.clone(), Duration::from_secs(3600)).await;
    write_policy(&app).await;
    for path in ["/v1/sidecars", "/v1/policies", "/v1/policies/reviews-abort"] {
        assert_eq!(send(&app, get(path)).await.status, 200);
    }
    assert_eq!(replicas.pages.load(Ordering::SeqCst), 1, "one gathering");

    let replicas = Arc::new(Replicas::default());
    replicas.set("a", Ok(Vec::new()));
    let (app, _dir) = app_with(replicas.clone(), Duration::ZERO).await;
    for _ in 0..3 {
        send(&app, get("/v1/sidecars")).await;
    }
    assert_eq!(replicas.pages.load(Ordering::SeqCst), 3, "stale at once");
}

#[actix_web::test]
async fn a_policy_newer_than_the_tables_is_read_from_a_new_gathering() {
    let replicas = Arc::new(Replicas::default());
    replicas.set("a", Ok(Vec::new()));
    replicas.behind.store(true, Ordering::SeqCst);
    let (app, _dir) = app_with(replicas.clone(), Duration::from_secs(3600)).await;
    write_policy(&app).await;
    let gatherings = || replicas.pages.load(Ordering::SeqCst);
    let past_min_age = || std::thread::sleep(MIN_AGE + Duration::from_millis(10));
    send(&app, get("/v1/sidecars")).await;
    assert_eq!(gatherings(), 1);
    past_min_age();
    send(&app, get("/v1/sidecars")).await;
    assert_eq!(gatherings(), 1, "the list asks for no revision");
    send(&app, get("/v1/policies/reviews-abort")).await;
    assert_eq!(gatherings(), 2, "the tables predate the policy");
    replicas.behind.store(false, Ordering::SeqCst);
    past_min_age();
    send(&app, get("/v1/policies")).await;
    assert_eq!(gatherings(), 3);
    past_min_age();
    send(&app, get("/v1/policies/reviews-abort")).await;
    send(&app, get("/v1/sidecars?policy=reviews-abort")).await;
    assert_eq!(gatherings(), 3, "the replicas know of it now");
}

#[actix_web::test]
async fn without_a_source_sidecar_status_is_unavailable_and_policies_read_as_before() {
    let (app, _clock, _dir) = embedded_app().await;
    let reply = send(&app, get("/v1/sidecars")).await;
    reply.assert_error(503, "sidecars_unavailable");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("BOIFI_BROADCASTERS"),
        "{}",
        reply.body
    );
    write_policy(&app).await;
    let one = send(&app, get("/v1/policies/reviews-abort")).await;
    assert_eq!(one.body["status"].get("enforcement"), None);
    assert_eq!(one.body["status"].get("injected"), None);
}

#[actix_web::test]
async fn the_openapi_document_describes_the_route_and_the_status_fields() {
    let (app, _clock, _dir) = embedded_app().await;
    let doc = send(&app, TestRequest::get().uri("/v1/openapi.json")).await;
    let route = &doc.body["paths"]["/v1/sidecars"]["get"];
    let params: Vec<&str> = route["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "namespace",
            "service",
            "policy",
            "state",
            "limit",
            "continue"
        ]
    );
    let schemas = &doc.body["components"]["schemas"];
    assert!(schemas["SidecarList"]["properties"]["unreachable"].is_object());
    assert!(schemas["PolicyStatus"]["properties"]["enforcement"].is_object());
    assert!(schemas["Enforcement"]["properties"]["lagging_count"].is_object());
}
