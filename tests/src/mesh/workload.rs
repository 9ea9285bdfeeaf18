//! The workloads of the local mesh: each a set of Envoy replicas running the real plugin (node
//! metadata as Istio sets it) in front of an [`Upstream`] that names the replica.

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use super::traffic::{Outcomes, Req};
use super::REQUEST_TIMEOUT;
use crate::envoy::{Envoy, EnvoyBuilder, Upstream};
use crate::http::{HttpResponse, KeepAliveClient};

/// A workload to start: its identity and how many Envoy replicas serve it.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub replicas: usize,
    /// Which broadcaster replica its sidecars poll (see [`MeshBuilder::broadcasters`](super::MeshBuilder::broadcasters)).
    pub broadcaster: usize,
}

impl WorkloadSpec {
    /// Workload `namespace/name` with label `app: name` and 2 replicas.
    pub fn new(namespace: &str, name: &str) -> Self {
        WorkloadSpec {
            namespace: namespace.into(),
            name: name.into(),
            labels: vec![("app".into(), name.into())],
            replicas: 2,
            broadcaster: 0,
        }
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.retain(|(k, _)| k != key);
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Its sidecars poll broadcaster replica `index`.
    pub fn broadcaster(mut self, index: usize) -> Self {
        self.broadcaster = index;
        self
    }
}

/// One Envoy sidecar and the upstream it fronts.
pub struct Replica {
    name: String,
    /// The pod's name, as its node metadata `NAME` says.
    pod: String,
    envoy: Envoy,
    upstream: Upstream,
    client: KeepAliveClient,
}

impl Replica {
    pub(super) fn start(
        spec: &WorkloadSpec,
        index: usize,
        stream_port: u16,
        plugin_config: Option<&str>,
    ) -> Replica {
        let name = format!("{}-{index}", spec.name);
        let upstream = Upstream::named(&name);
        let labels: Vec<(&str, &str)> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut builder = EnvoyBuilder::new(upstream.port(), stream_port)
            .workload(&spec.namespace, &spec.name)
            .labels(&labels)
            .replica(index)
            .concurrency(1);
        if let Some(config) = plugin_config {
            builder = builder.plugin_config(config);
        }
        let pod = builder.pod().name;
        let envoy = builder.start();
        let client = KeepAliveClient::new(envoy.addr(), REQUEST_TIMEOUT);
        Replica {
            name,
            pod,
            envoy,
            upstream,
            client,
        }
    }

    /// `<workload>-<index>`, as the upstream names itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's name (node metadata `NAME`), as sidecar reports give it.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }

    /// Stops this sidecar's Envoy (by PID), as when its pod goes away.
    pub fn stop(&mut self) {
        self.envoy.stop();
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// One request over this replica's keep-alive connection.
    pub fn request(&self, req: &Req) -> io::Result<HttpResponse> {
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = req.body.as_deref().map(str::as_bytes);
        self.client.request(&req.method, &req.path, &headers, body)
    }

    /// Per plugin VM (by Envoy thread), the newest revision it applied.
    pub fn applied_revisions(&self) -> BTreeMap<String, u64> {
        self.envoy.applied_revisions()
    }

    /// True when every plugin VM of this sidecar applied `revision` or a newer one.
    pub fn has_applied(&self, revision: u64) -> bool {
        self.envoy.has_applied(revision)
    }
}

/// A workload: its identity and its replicas.
pub struct Workload {
    pub(super) spec: WorkloadSpec,
    pub(super) replicas: Vec<Replica>,
}

impl Workload {
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether `name` (or `namespace/name`) names this workload.
    pub(super) fn is(&self, name: &str) -> bool {
        match name.split_once('/') {
            Some((namespace, name)) => self.spec.namespace == namespace && self.spec.name == name,
            None => self.spec.name == name,
        }
    }

    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// Sends `n` requests, request `i` to replica `i % replicas` (round-robin), each replica's
    /// share in order on its keep-alive connection, the replicas in parallel.
    pub fn send(&self, n: usize, req: &Req) -> Outcomes {
        let count = self.replicas.len();
        let parts: Vec<Outcomes> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter()
                .enumerate()
                .map(|(i, replica)| {
                    let share = n / count + usize::from(i < n % count);
                    scope.spawn(move || {
                        let mut outcomes = Outcomes::default();
                        for _ in 0..share {
                            let start = Instant::now();
                            let result = replica.request(req);
                            outcomes.record(result, start.elapsed());
                        }
                        outcomes
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut total = Outcomes::default();
        for part in parts {
            total.merge(part);
        }
        total
    }
}
