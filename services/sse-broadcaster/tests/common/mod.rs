//! Fixtures for the end-to-end tests: policy-api and the broadcaster serving one store on
//! loopback, in a runtime of their own, with blocking clients on the test thread.

#![allow(dead_code)] // each test binary uses a different part

pub mod http;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_policy_api::{AppState, Auth};
use boifi_sse_broadcaster::{Broadcaster, Clock, Settings, SystemClock};
use boifi_store::{open_store, PolicyStore, StoreSettings};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use boifi_tests::wait_until;
pub use http::{call, request, Block, Response};

/// Generous: the suite runs in parallel on two cores, next to etcd.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

/// A policy for `namespace`/`service` with one abort rule, running for `duration_seconds`
/// (0: until deleted).
pub fn policy(name: &str, service: &str, duration_seconds: u64) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "namespace": "demo", "service": service },
            "rules": [ { "fault": { "duration_seconds": duration_seconds, "abort": { "httpStatus": 503 } } } ]
        }
    })
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn stop(mut self, runtime: &Runtime) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match runtime.block_on(async { tokio::time::timeout(DEADLINE, self.task).await }) {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("server failed: {e}")),
            Ok(Err(e)) => Err(format!("server task: {e}")),
            Err(_) => Err("server did not stop within the deadline".to_owned()),
        }
    }
}

/// Where the services keep their policies.
pub enum Backend {
    Embedded(tempfile::TempDir),
    Etcd { endpoint: String, prefix: String },
}

/// policy-api and the broadcaster on one store.
pub struct Services {
    pub runtime: Runtime,
    pub store: Arc<dyn PolicyStore>,
    api: Option<Server>,
    broadcaster: Option<(Server, Broadcaster)>,
    broadcaster_port: u16,
    settings: Settings,
    clock: Arc<dyn Clock>,
    _backend: Backend,
}

fn bind(port: u16) -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind loopback")
}

impl Services {
    /// Starts both services on the embedded store in a fresh temp dir, on `clock` (default: the
    /// system clock): policy-api stamps expiry times by it and the broadcaster applies them by it.
    pub fn embedded(settings: Settings, clock: Option<Arc<dyn Clock>>) -> Services {
        let dir = tempfile::tempdir().expect("temp dir");
        let store_settings = StoreSettings {
            etcd_endpoints: Vec::new(),
            etcd_prefix: String::new(),
            data_dir: dir.path().to_path_buf(),
        };
        Self::start(store_settings, Backend::Embedded(dir), settings, clock)
    }

    /// Starts both services on etcd at `endpoint`, under a prefix of their own.
    pub fn etcd(endpoint: &str, settings: Settings) -> Services {
        let prefix = format!("/boifi-test-{}/", std::process::id());
        let store_settings = StoreSettings {
            etcd_endpoints: vec![endpoint.to_owned()],
            etcd_prefix: prefix.clone(),
            data_dir: PathBuf::new(),
        };
        let backend = Backend::Etcd {
            endpoint: endpoint.to_owned(),
            prefix,
        };
        Self::start(store_settings, backend, settings, None)
    }

    fn start(
        store_settings: StoreSettings,
        backend: Backend,
        settings: Settings,
        clock: Option<Arc<dyn Clock>>,
    ) -> Services {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = runtime
            .block_on(open_store(&store_settings))
            .expect("open store");
        let clock: Arc<dyn Clock> = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let state = AppState::new(store.clone(), Auth::disabled())
            .expect("api state")
            .with_clock(clock.clone());
        let listener = bind(0);
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(boifi_policy_api::server::run(listener, state, async {
            let _ = stopped.await;
        }));
        let mut services = Services {
            runtime,
            store,
            api: Some(Server {
                addr,
                stop: Some(stop),
                task,
            }),
            broadcaster: None,
            broadcaster_port: 0,
            settings,
            clock,
            _backend: backend,
        };
        services.start_broadcaster();
        services
    }

    /// Starts the broadcaster (again), on the port it had before if any, and waits until ready.
    pub fn start_broadcaster(&mut self) {
        assert!(self.broadcaster.is_none(), "broadcaster already running");
        let listener = bind(self.broadcaster_port);
        let addr = listener.local_addr().unwrap();
        self.broadcaster_port = addr.port();
        let _guard = self.runtime.enter();
        let broadcaster = Broadcaster::start(
            self.store.clone(),
            self.clock.clone(),
            self.settings.clone(),
        )
        .expect("start broadcaster");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = self.runtime.spawn(boifi_sse_broadcaster::run(
            listener,
            broadcaster.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        self.broadcaster = Some((
            Server {
                addr,
                stop: Some(stop),
                task,
            },
            broadcaster,
        ));
        let ready = wait_until(deadline(), || {
            matches!(
                call(addr, "GET", "/v1/ready", None, deadline()),
                Ok((200, _))
            )
        });
        assert!(ready, "broadcaster ready within the deadline");
    }

    pub fn stop_broadcaster(&mut self) {
        let (server, broadcaster) = self.broadcaster.take().expect("broadcaster running");
        server.stop(&self.runtime).expect("stop the broadcaster");
        drop(broadcaster);
    }

    pub fn api(&self) -> SocketAddr {
        self.api.as_ref().expect("api running").addr
    }

    pub fn broadcaster(&self) -> SocketAddr {
        self.broadcaster
            .as_ref()
            .expect("broadcaster running")
            .0
            .addr
    }

    /// Creates or replaces a policy through policy-api; returns its revision. Retries while
    /// the API answers 503 (the store is reconnecting).
    /// Waits until the broadcaster serves `revision` (a write through the API returns before
    /// the broadcaster's watch has delivered it).
    pub fn wait_broadcaster_at(&self, revision: u64) {
        let at = wait_until(deadline(), || {
            call(self.broadcaster(), "GET", "/v1/ready", None, deadline()).is_ok_and(
                |(status, body)| {
                    status == 200
                        && serde_json::from_str::<Value>(&body)
                            .is_ok_and(|v| v["revision"].as_u64() >= Some(revision))
                },
            )
        });
        assert!(at, "broadcaster at revision {revision} within the deadline");
    }

    pub fn put(&self, policy: &Value) -> u64 {
        let body = policy.to_string();
        let deadline = deadline();
        loop {
            match call(self.api(), "POST", "/v1/policies", Some(&body), deadline) {
                Ok((200 | 201, text)) => {
                    let stored: Value = serde_json::from_str(&text).expect("policy JSON");
                    return stored["status"]["revision"]
                        .as_u64()
                        .expect("status.revision");
                }
                Ok((503, _)) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => panic!("POST /v1/policies: {other:?}"),
            }
        }
    }

    pub fn delete(&self, name: &str) {
        let path = format!("/v1/policies/{name}");
        let (status, body) = call(self.api(), "DELETE", &path, None, deadline()).expect("DELETE");
        assert!(
            status == 200 || status == 204,
            "DELETE {name}: {status} {body}"
        );
    }

    pub fn set_halt(&self, halted: bool) {
        let method = if halted { "POST" } else { "DELETE" };
        let (status, body) = call(self.api(), method, "/v1/halt", None, deadline()).expect("halt");
        assert!(
            (200..300).contains(&status),
            "{method} /v1/halt: {status} {body}"
        );
    }

    /// What a client filtered by nothing should hold: policy name -> revision, and the halt
    /// flag and revision of the store.
    pub fn expected(&self) -> State {
        let snapshot = self
            .runtime
            .block_on(self.store.snapshot())
            .expect("store snapshot");
        State {
            revision: Some(snapshot.revision),
            halted: snapshot.halted,
            policies: snapshot
                .policies
                .iter()
                .map(|p| (p.policy.metadata.name.clone(), p.revision))
                .collect(),
        }
    }

    pub fn metrics(&self) -> String {
        let (status, text) =
            call(self.broadcaster(), "GET", "/metrics", None, deadline()).expect("/metrics");
        assert_eq!(status, 200);
        text
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        // No panics here: a failing test may be unwinding already.
        let servers = [
            self.broadcaster.take().map(|(server, _)| server),
            self.api.take(),
        ];
        for server in servers.into_iter().flatten() {
            if let Err(e) = server.stop(&self.runtime) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Opens `/v1/config/stream?{query}`, optionally with `Last-Event-ID`.
pub fn open_stream(addr: SocketAddr, query: &str, last_event_id: Option<u64>) -> Response {
    let headers: Vec<(&str, String)> = last_event_id
        .map(|id| ("Last-Event-ID", id.to_string()))
        .into_iter()
        .collect();
    let response = request(
        addr,
        "GET",
        &format!("/v1/config/stream?{query}"),
        &headers,
        None,
        deadline(),
    )
    .expect("open stream");
    assert_eq!(response.status, 200, "stream status");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    response
}

pub fn next_event(stream: &mut Response) -> Block {
    stream
        .next_event(deadline())
        .expect("read the stream")
        .expect("the stream is open")
}

/// A client's view: what it applied from the events it received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub revision: Option<u64>,
    pub halted: bool,
    /// Policy name -> `status.revision`.
    pub policies: BTreeMap<String, u64>,
}

impl State {
    /// Applies one event as a client would.
    pub fn apply(&mut self, block: &Block) {
        let data = block.json();
        match block.name() {
            "snapshot" => {
                self.halted = data["halted"].as_bool().expect("halted");
                self.policies = data["policies"]
                    .as_array()
                    .expect("policies")
                    .iter()
                    .map(policy_entry)
                    .collect();
            }
            "policy" => {
                let (name, revision) = policy_entry(&data);
                self.policies.insert(name, revision);
            }
            "delete" => {
                self.policies.remove(data["name"].as_str().expect("name"));
            }
            "halt" => self.halted = data["halted"].as_bool().expect("halted"),
            _ => return,
        }
        self.revision = Some(block.revision());
    }
}

fn policy_entry(policy: &Value) -> (String, u64) {
    (
        policy["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned(),
        policy["status"]["revision"]
            .as_u64()
            .expect("status.revision"),
    )
}

/// A stream client that reconnects with `Last-Event-ID` whenever its stream ends, as an
/// `EventSource` does.
pub struct Follower {
    addr: SocketAddr,
    query: String,
    stream: Option<Response>,
    pub state: State,
    pub connections: usize,
}

impl Follower {
    pub fn new(addr: SocketAddr, query: &str) -> Follower {
        Follower {
            addr,
            query: query.to_owned(),
            stream: None,
            state: State::default(),
            connections: 0,
        }
    }

    /// Reads and applies events until `condition` holds (true) or `deadline` passes (false).
    pub fn until(&mut self, deadline: Instant, mut condition: impl FnMut(&State) -> bool) -> bool {
        loop {
            if condition(&self.state) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let Some(stream) = self.stream.as_mut() else {
                let headers: Vec<(&str, String)> = self
                    .state
                    .revision
                    .map(|id| ("Last-Event-ID", id.to_string()))
                    .into_iter()
                    .collect();
                let path = format!("/v1/config/stream?{}", self.query);
                match request(self.addr, "GET", &path, &headers, None, deadline) {
                    Ok(response) if response.status == 200 => {
                        self.connections += 1;
                        self.stream = Some(response);
                    }
                    // Down or not ready yet: try again shortly, as EventSource does.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
                continue;
            };
            match stream.next_block(deadline) {
                Ok(Some(block)) => {
                    if block.name() == "resync" {
                        self.stream = None;
                    } else {
                        self.state.apply(&block);
                    }
                }
                Ok(None) => self.stream = None,
                Err(_) => self.stream = None,
            }
        }
    }
}

/// A change made through policy-api reaches a connected stream client, in revision order, and
/// a client filtered to another service gets only what concerns it.
pub fn scenario_changes_reach_filtered_clients(services: &Services) {
    let addr = services.broadcaster();
    let mut reviews = open_stream(addr, "namespace=demo&service=reviews", None);
    let mut ratings = open_stream(addr, "namespace=demo&service=ratings", None);
    let start = next_event(&mut reviews);
    assert_eq!(start.name(), "snapshot");
    assert_eq!(start.json()["policies"], json!([]));
    assert_eq!(next_event(&mut ratings).name(), "snapshot");

    let r1 = services.put(&policy("p1", "reviews", 0));
    let r2 = services.put(&policy("p2", "reviews", 0));
    // p1 moves to ratings: deleted for reviews clients, new for ratings clients.
    let r3 = services.put(&policy("p1", "ratings", 0));
    services.delete("p2");
    services.set_halt(true);
    let r5 = services.expected().revision.unwrap();
    assert!(r1 < r2 && r2 < r3 && r3 < r5);

    let got: Vec<_> = (0..5).map(|_| next_event(&mut reviews).summary()).collect();
    let r4 = got[3].1;
    let s = |e: &str, r: u64, w: &str| (e.to_owned(), r, w.to_owned());
    assert_eq!(
        got,
        [
            s("policy", r1, "p1"),
            s("policy", r2, "p2"),
            s("delete", r3, "p1"),
            s("delete", r4, "p2"),
            s("halt", r5, "true"),
        ]
    );
    assert!(r3 < r4 && r4 < r5);
    // The ratings client saw nothing of p2 or of p1 while it selected reviews.
    let got: Vec<_> = (0..2).map(|_| next_event(&mut ratings).summary()).collect();
    assert_eq!(got, [s("policy", r3, "p1"), s("halt", r5, "true")]);
    services.set_halt(false);
}
