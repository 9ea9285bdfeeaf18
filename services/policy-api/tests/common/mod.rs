//! Shared fixtures for the service-boundary tests: an app on a real store with known tokens
//! and a clock the test controls ([`embedded_app`], [`app_on`]), the stores it runs on, a
//! valid policy, and [`send`], which returns a [`Reply`] to assert on.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::test::{self, TestRequest};
use boifi_policy_api::{app, AppState, Auth, ManualClock};
use boifi_store::{open_store, AuditRetention, EmbeddedStore, PolicyStore, StoreSettings};
use serde_json::{json, Value};

pub const WRITER: &str = "writer-token-0123456789";
pub const READER: &str = "reader-token-0123456789";
/// 2024-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_704_067_200_000;

/// The test tokens as a tokens file holds them (a comment, then `name role token` lines).
pub fn tokens_file() -> String {
    format!("# test tokens\nops writer {WRITER}\ndashboard reader {READER}\n")
}

pub fn tokens() -> Auth {
    Auth::parse(tokens_file().as_bytes()).expect("test tokens parse")
}

/// State on `store` with the test tokens and a manual clock at [`T0_MS`].
pub fn state_on(store: Arc<dyn PolicyStore>) -> (AppState, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0_MS));
    let state = AppState::new(store, tokens())
        .expect("metrics")
        .with_clock(clock.clone());
    (state, clock)
}

/// An embedded store in a fresh temp dir (kept alive by the returned guard).
pub fn embedded() -> (Arc<dyn PolicyStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    (Arc::new(store), dir)
}

/// An etcd store where nothing listens: it connects lazily, so every call fails.
pub async fn unreachable_etcd() -> Arc<dyn PolicyStore> {
    open_store(&StoreSettings {
        etcd_endpoints: vec![format!("http://127.0.0.1:{}", boifi_tests::free_port())],
        etcd_prefix: "/boifi/".into(),
        data_dir: "unused".into(),
        audit_retention: AuditRetention::default(),
    })
    .await
    .expect("lazy etcd store")
}

/// The app (as `test::init_service` runs it) on `store`, from [`state_on`].
pub async fn app_on(
    store: Arc<dyn PolicyStore>,
) -> (
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    Arc<ManualClock>,
) {
    let (state, clock) = state_on(store);
    (test::init_service(app(state)).await, clock)
}

/// [`app_on`] an [`embedded`] store; the temp dir lives as long as the returned guard.
pub async fn embedded_app() -> (
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    Arc<ManualClock>,
    tempfile::TempDir,
) {
    let (store, dir) = embedded();
    let (app, clock) = app_on(store).await;
    (app, clock, dir)
}

/// [`embedded_app`] with auth disabled (`BOIFI_AUTH_DISABLED=true`): every request is a writer.
pub async fn embedded_app_without_auth() -> (
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    tempfile::TempDir,
) {
    let (store, dir) = embedded();
    let state = AppState::new(store, Auth::disabled()).expect("metrics");
    (test::init_service(app(state)).await, dir)
}

/// A valid policy in the design brief's format.
pub fn policy(name: &str) -> Value {
    json!({
        "metadata": { "name": name, "version": "1.0.0" },
        "spec": {
            "selector": { "namespace": "demo", "service": "reviews", "labels": { "version": "v2" } },
            "rules": [ {
                "match": {
                    "method": { "exact": "GET" },
                    "path": { "prefix": "/api" },
                    "headers": [ { "name": "x-user", "exact": "test" } ]
                },
                "fault": {
                    "percentage": 50.0,
                    "duration_seconds": 300,
                    "delay": { "fixed_delay_ms": 200 },
                    "abort": { "httpStatus": 503, "body": "optional", "headers": { "x-k": "v" } }
                }
            } ]
        }
    })
}

/// `GET uri` with the reader token.
pub fn get_as_reader(uri: &str) -> TestRequest {
    TestRequest::get().uri(uri).insert_header(bearer(READER))
}

pub fn bearer(token: &str) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {token}"))
}

/// The response's status, headers and body (JSON when it parses, else a JSON string).
pub struct Reply {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Field paths of an error's `details`.
    pub fn fields(&self) -> Vec<String> {
        self.body["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the error shape and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["error"], code, "body: {}", self.body);
        assert!(self.body["message"].is_string(), "body: {}", self.body);
        assert!(self.body["details"].is_array(), "body: {}", self.body);
    }
}

pub async fn send<S, B>(app: &S, req: TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = test::read_body(res).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply {
        status,
        headers,
        body,
    }
}
