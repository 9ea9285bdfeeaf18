//! policy-api and the sse-broadcaster in this process, on one store (as `boifi serve` runs
//! them), in a Tokio runtime of their own, with blocking clients for the test thread.
//!
//! - [`Services`]: the two servers on loopback ports over the embedded store or etcd; write
//!   policies and the kill switch through the API; stop and restart the broadcaster.
//! - [`State`]: what a stream client holds after applying the events it received, and what
//!   [`Services::expected`] says it should hold.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_policy_api::{AppState, Auth};
use boifi_sse_broadcaster::{Broadcaster, Clock, Settings, SystemClock};
use boifi_store::{open_store, AuditRetention, PolicyStore, StoreSettings};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{call, ready, Block};
use crate::wait_until;

/// Generous: suites run in parallel on two cores, next to etcd and Envoys.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn deadline() -> Instant {
    Instant::now() + DEADLINE
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

/// Waits until `addr` answers `GET /v1/ready` with 200.
fn assert_ready(addr: SocketAddr, what: &str) {
    let ready = wait_until(deadline(), || ready(addr).is_ok());
    assert!(ready, "{what} on {addr} ready within the deadline");
}

fn bind(port: u16) -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind loopback")
}

/// policy-api and the broadcaster on one store. Both servers are stopped on drop, then the
/// runtime.
pub struct Services {
    // Declared first, so it is dropped first: what the servers left running ends with it.
    runtime: Runtime,
    store: Arc<dyn PolicyStore>,
    api: Option<Server>,
    broadcaster: Option<(Server, Broadcaster)>,
    broadcaster_port: u16,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// The embedded store's directory.
    _dir: Option<tempfile::TempDir>,
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
            audit_retention: AuditRetention::default(),
        };
        Self::start(store_settings, Some(dir), settings, clock)
    }

    /// Starts both services on etcd at `endpoint`, under a prefix of their own.
    pub fn etcd(endpoint: &str, settings: Settings) -> Services {
        let store_settings = StoreSettings {
            etcd_endpoints: vec![endpoint.to_owned()],
            etcd_prefix: format!("/boifi-test-{}/", std::process::id()),
            data_dir: PathBuf::new(),
            audit_retention: AuditRetention::default(),
        };
        Self::start(store_settings, None, settings, None)
    }

    fn start(
        store_settings: StoreSettings,
        dir: Option<tempfile::TempDir>,
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
        let addr = listener.local_addr().expect("api addr");
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
            _dir: dir,
        };
        assert_ready(addr, "policy-api");
        services.start_broadcaster();
        services
    }

    /// Starts the broadcaster (again), on the port it had before if any, and waits until ready.
    pub fn start_broadcaster(&mut self) {
        assert!(self.broadcaster.is_none(), "broadcaster already running");
        let listener = bind(self.broadcaster_port);
        let addr = listener.local_addr().expect("broadcaster addr");
        self.broadcaster_port = addr.port();
        // Broadcaster::start spawns its tasks on the current runtime.
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
        assert_ready(addr, "sse-broadcaster");
    }

    pub fn stop_broadcaster(&mut self) {
        let (server, broadcaster) = self.broadcaster.take().expect("broadcaster running");
        server.stop(&self.runtime).expect("stop the broadcaster");
        let _guard = self.runtime.enter();
        drop(broadcaster);
    }

    pub fn api(&self) -> SocketAddr {
        self.api.as_ref().expect("api running").addr
    }

    /// The running broadcaster itself, for in-process readers (as `boifi serve`'s policy-api).
    pub fn broadcaster_handle(&self) -> &Broadcaster {
        &self.broadcaster.as_ref().expect("broadcaster running").1
    }

    pub fn broadcaster(&self) -> SocketAddr {
        self.broadcaster
            .as_ref()
            .expect("broadcaster running")
            .0
            .addr
    }

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

    /// Creates or replaces a policy through policy-api; returns its revision. Retries while
    /// the API answers 503 (the store is reconnecting).
    pub fn put(&self, policy: &Value) -> u64 {
        self.write(policy).1
    }

    /// [`put`](Self::put) of a policy that must be new: the API answers 201 Created.
    pub fn create(&self, policy: &Value) -> u64 {
        let (status, revision) = self.write(policy);
        assert_eq!(status, 201, "POST /v1/policies of a new policy");
        revision
    }

    /// `(status, status.revision)` of `POST /v1/policies`.
    fn write(&self, policy: &Value) -> (u16, u64) {
        let body = policy.to_string();
        let deadline = deadline();
        loop {
            match call(self.api(), "POST", "/v1/policies", Some(&body), deadline) {
                Ok((status @ (200 | 201), text)) => {
                    let stored: Value = serde_json::from_str(&text).expect("policy JSON");
                    let revision = stored["status"]["revision"]
                        .as_u64()
                        .expect("status.revision");
                    return (status, revision);
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

    /// What a client filtered by nothing should hold: the store's policies, halt flag and
    /// revision.
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

    /// The broadcaster's `/metrics` text.
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
        let (server, broadcaster) = self.broadcaster.take().unzip();
        for server in [server, self.api.take()].into_iter().flatten() {
            if let Err(e) = server.stop(&self.runtime) {
                eprintln!("cleanup: {e}");
            }
        }
        // The broadcaster's tasks belong to the runtime: end them inside it.
        let _guard = self.runtime.enter();
        drop(broadcaster);
    }
}

/// A stream client's view: what it applied from the events it received.
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
