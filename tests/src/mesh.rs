//! A local mesh on loopback, for the end-to-end scenarios, the demo and the benchmarks.
//!
//! - `mesh/control.rs`: the [`ControlPlane`] (etcd plus `policy-api` and `sse-broadcaster`, or
//!   `boifi serve`), which can be killed and restarted on the same ports and data like a crashed
//!   control plane; policies and the kill switch written through its API. More broadcaster
//!   replicas on its etcd: [`BroadcasterProcess`].
//! - `mesh/workload.rs`: a [`WorkloadSpec`] becomes a [`Workload`] of [`Replica`]s, each an Envoy
//!   sidecar running the real plugin in front of an upstream that names it in
//!   [`UPSTREAM_HEADER`](crate::envoy::UPSTREAM_HEADER).
//! - `mesh/traffic.rs`: a request ([`Req`]) sent round-robin across a workload's replicas, and the
//!   [`Outcomes`] counted.
//! - `mesh/scenario.rs`: [`run_scenarios`] runs named checks on one shared mesh;
//!   [`binomial_bound_999`] bounds the sampling checks.
//! - `mesh.rs` (this file): [`MeshBuilder`] starts a [`Mesh`] (the control plane plus workloads) and the mesh
//!   waits until every plugin VM applied a revision ([`Mesh::apply`], [`Mesh::barrier`]).
//!
//! Every process is stopped by PID on drop. The binaries come from [`crate::binaries`].

mod control;
mod scenario;
mod traffic;
mod workload;

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::wait_until;
pub use control::{BroadcasterProcess, Broadcasters, ControlPlane, ControlPlaneKind, Written};
pub use scenario::{binomial_bound_999, run_scenarios, Scenario};
pub use traffic::{Outcomes, Req, FAULT_HEADER};
pub use workload::{Replica, Workload, WorkloadSpec};

/// Name of the policy [`Mesh::barrier`] writes; it selects every workload and matches nothing.
pub const BARRIER_POLICY: &str = "zz-mesh-barrier";
/// Path the barrier policy matches; no scenario sends it.
const BARRIER_PATH: &str = "/__boifi_mesh_barrier__";

/// Every request of the harness, API or data plane.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sidecars apply a change within milliseconds; the deadline only bounds a broken run.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    kind: ControlPlaneKind,
    api_port: Option<u16>,
    broadcasters: Broadcasters,
    workloads: Vec<WorkloadSpec>,
    plugin_config: Option<String>,
}

impl MeshBuilder {
    pub fn new(kind: ControlPlaneKind) -> Self {
        MeshBuilder {
            kind,
            api_port: None,
            broadcasters: Broadcasters::default(),
            workloads: Vec::new(),
            plugin_config: None,
        }
    }

    pub fn workload(mut self, spec: WorkloadSpec) -> Self {
        self.workloads.push(spec);
        self
    }

    /// Runs `n` broadcaster replicas on the same etcd (`Separate` only); a workload polls the
    /// one its [`WorkloadSpec::broadcaster`] names.
    pub fn broadcasters(mut self, n: usize) -> Self {
        self.broadcasters.replicas = n;
        self
    }

    /// A `BOIFI_*` variable for every broadcaster (or `boifi serve`).
    pub fn broadcaster_env(mut self, key: &str, value: &str) -> Self {
        self.broadcasters.env.push((key.into(), value.into()));
        self
    }

    /// The API's port (default: a free one).
    pub fn api_port(mut self, port: u16) -> Self {
        self.api_port = Some(port);
        self
    }

    /// The plugin configuration; by default the tests' short poll wait and backoff
    /// ([`EnvoyBuilder::default_plugin_config`](crate::envoy::EnvoyBuilder::default_plugin_config)).
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.into());
        self
    }

    /// Starts the control plane, then every Envoy replica in parallel, and waits until every
    /// plugin VM holds the control plane's first snapshot.
    pub fn start(self) -> Result<Mesh, String> {
        let control = ControlPlane::start_with(self.kind, self.api_port, self.broadcasters)?;
        let stream_ports: Vec<u16> = control.stream_addrs().iter().map(|a| a.port()).collect();
        for spec in &self.workloads {
            if spec.broadcaster >= stream_ports.len() {
                return Err(format!(
                    "workload {} polls broadcaster {}, but there are {}",
                    spec.name,
                    spec.broadcaster,
                    stream_ports.len()
                ));
            }
        }
        let jobs: Vec<(usize, usize)> = self
            .workloads
            .iter()
            .enumerate()
            .flat_map(|(w, spec)| (0..spec.replicas).map(move |r| (w, r)))
            .collect();
        let started: Vec<Replica> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|&(w, r)| {
                    let spec = &self.workloads[w];
                    let plugin_config = self.plugin_config.as_deref();
                    let stream_port = stream_ports[spec.broadcaster];
                    scope.spawn(move || Replica::start(spec, r, stream_port, plugin_config))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut replicas = started.into_iter();
        let workloads = self
            .workloads
            .into_iter()
            .map(|spec| Workload {
                replicas: replicas.by_ref().take(spec.replicas).collect(),
                spec,
            })
            .collect();
        let mesh = Mesh { workloads, control };
        // Every VM polls at once; its first snapshot (revision >= 1 once anything was
        // written, else 0) arrives within milliseconds.
        mesh.wait_applied_by(0, |_| true)?;
        Ok(mesh)
    }
}

/// A running mesh. Envoys, upstreams and the control plane are stopped on drop.
pub struct Mesh {
    // Sidecars first: they go down before the control plane they poll.
    workloads: Vec<Workload>,
    control: ControlPlane,
}

impl Mesh {
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// For [`ControlPlane::stop`] and [`ControlPlane::restart`].
    pub fn control_mut(&mut self) -> &mut ControlPlane {
        &mut self.control
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload called `name` (or `namespace/name`). Panics when there is none or more
    /// than one (a test bug).
    pub fn workload(&self, name: &str) -> &Workload {
        let mut found = self.workloads.iter().filter(|w| w.is(name));
        match (found.next(), found.next()) {
            (Some(w), None) => w,
            (None, _) => panic!("no workload {name:?} in this mesh"),
            (Some(_), Some(_)) => panic!("{name:?} is ambiguous: say namespace/name"),
        }
    }

    /// Every sidecar of every workload.
    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.workloads.iter().flat_map(|w| w.replicas.iter())
    }

    /// The sidecars of `workloads`, in that order.
    pub fn replicas_of(&self, workloads: &[&str]) -> Vec<&Replica> {
        workloads
            .iter()
            .flat_map(|w| self.workload(w).replicas())
            .collect()
    }

    /// The sidecar called `name` (`<workload>-<index>`), to stop it. Panics when there is none.
    pub fn replica_mut(&mut self, name: &str) -> &mut Replica {
        self.workloads
            .iter_mut()
            .flat_map(|w| w.replicas.iter_mut())
            .find(|r| r.name() == name)
            .unwrap_or_else(|| panic!("no replica {name:?} in this mesh"))
    }

    /// Writes a policy through the API.
    pub fn put_policy(&self, policy: &Value) -> Result<Written, String> {
        self.control.put_policy(policy)
    }

    /// Writes a policy and waits until every sidecar of the named workloads applied it.
    pub fn apply(&self, policy: &Value, workloads: &[&str]) -> Result<Written, String> {
        let written = self.put_policy(policy)?;
        self.wait_applied(written.revision, workloads)?;
        Ok(written)
    }

    /// Waits until every plugin VM of every sidecar of the named workloads (`name` means every
    /// namespace's) applied `revision` (or newer); returns how long that took. Only sidecars that a change concerns receive
    /// it, so name those (or use [`Mesh::barrier`]).
    pub fn wait_applied(&self, revision: u64, workloads: &[&str]) -> Result<Duration, String> {
        for name in workloads {
            assert!(
                self.workloads.iter().any(|w| w.is(name)),
                "no workload {name:?} in this mesh"
            );
        }
        self.wait_applied_by(revision, |w| workloads.iter().any(|name| w.is(name)))
    }

    /// [`Mesh::wait_applied`] for every sidecar (for changes every sidecar receives: the kill
    /// switch, a policy selecting everyone).
    pub fn wait_all_applied(&self, revision: u64) -> Result<Duration, String> {
        self.wait_applied_by(revision, |_| true)
    }

    fn wait_applied_by(
        &self,
        revision: u64,
        selected: impl Fn(&Workload) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let replicas: Vec<&Replica> = self
            .workloads
            .iter()
            .filter(|w| selected(w))
            .flat_map(|w| w.replicas.iter())
            .collect();
        let done = wait_until(start + APPLY_TIMEOUT, || {
            replicas.iter().all(|r| r.has_applied(revision))
        });
        if done {
            return Ok(start.elapsed());
        }
        let lagging: Vec<String> = replicas
            .iter()
            .filter(|r| !r.has_applied(revision))
            .map(|r| format!("{} {:?}", r.name(), r.applied_revisions()))
            .collect();
        Err(format!(
            "not every sidecar applied revision {revision} within {APPLY_TIMEOUT:?}; lagging \
             (revision per VM): {}",
            lagging.join(", ")
        ))
    }

    /// Makes sure every sidecar is current: rewrites [`BARRIER_POLICY`] (selects everyone,
    /// matches no request) and waits until every VM applied it, hence everything before it.
    /// Returns the barrier's revision.
    pub fn barrier(&self) -> Result<u64, String> {
        let written = self.put_policy(&json!({
            "metadata": {"name": BARRIER_POLICY},
            "spec": {"rules": [{
                "match": {"path": {"exact": BARRIER_PATH}},
                "fault": {"abort": {"httpStatus": 599}}
            }]}
        }))?;
        self.wait_all_applied(written.revision)?;
        Ok(written.revision)
    }

    /// Sets or clears the kill switch and waits until every sidecar applied it.
    pub fn set_halt(&self, halted: bool) -> Result<u64, String> {
        let revision = self.control.set_halt(halted)?;
        self.wait_all_applied(revision)?;
        Ok(revision)
    }
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("control", &self.control.kind())
            .field("api", &self.control.api_addr())
            .field(
                "replicas",
                &self.replicas().map(Replica::name).collect::<Vec<_>>(),
            )
            .finish()
    }
}
