//! What Istio does to a sidecar, reproduced for the local mesh. Kubernetes and Istio cannot run
//! here, so these functions write what pilot-agent and istiod would hand a sidecar's Envoy, as
//! far as it matters to the plugin. Read from istio/istio at 1.24.6 (differences to 1.19.10,
//! 1.21.6 and main noted where they exist):
//!
//! - [`Pod::node`]: the bootstrap's `node` (pilot-agent, `pkg/bootstrap/config.go`,
//!   `pkg/istio-agent/agent.go` `ServiceNode`, `pilot/cmd/pilot-agent/app/cmd.go`): id
//!   `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`, cluster `<app>.<ns>`, the metadata keys
//!   the injector and the agent set, and `LABELS` without `pod-template-hash`.
//! - [`stats_config`]: the bootstrap's `stats_config` exactly as pilot-agent renders it by
//!   default (`tools/packaging/common/envoy_bootstrap.json`, golden file
//!   `pkg/bootstrap/testdata/default_golden.json`), kept in `tests/istio/`. Its tag regexes are
//!   not all anchored, and Envoy applies them to every stat, the plugin's included.
//! - [`WasmPlugin`]: a WasmPlugin as it reaches Envoy over ECDS: istiod's resource
//!   (`pilot/pkg/model/extensions.go`: filter named
//!   `extenstions.istio.io/wasmplugin/<ns>.<name>`, plugin name `<ns>.<name>`, no `vm_id`,
//!   `root_id` from `pluginName`, `pluginConfig` as a JSON `StringValue`, `fail_open` from
//!   `failStrategy`), after pilot-agent's fetch step (`pkg/wasm/convert.go`): the module
//!   checked against `sha256`; when that fails, `FAIL_OPEN` gets an allow-all RBAC filter in
//!   its place and `FAIL_CLOSE` gets nothing (the agent NACKs).
//! - [`outbound_cluster`]: the name of a sidecar's outbound cluster for a service port.
//! - [`caller_bootstrap`]: a calling workload's sidecar: an outbound route to a service's
//!   replicas with istiod's default retry policy (`pilot/pkg/networking/core/route/retry/
//!   retry.go`: 2 retries on `connect-failure,refused-stream,unavailable,cancelled,
//!   retriable-status-codes` with 503 retriable through 1.23, other hosts first).
//!
//! Envoy reads the ECDS resource from a file (a `path_config_source`) instead of istiod's ADS
//! stream; the resource is the same.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The Istio release these shapes were read from.
pub const ISTIO_VERSION: &str = "1.24.6";
/// istiod's prefix of WasmPlugin ECDS resource names, typo included (1.21 to 1.25; 1.19 used no
/// prefix, 1.26 fixed the spelling).
pub const WASM_PLUGIN_RESOURCE_PREFIX: &str = "extenstions.istio.io/wasmplugin/";
/// The label the Deployment controller adds to every pod; pilot-agent leaves it out of `LABELS`.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

const STATS_CONFIG: &str = include_str!("../istio/stats-config-1.24.6.json");
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// The bootstrap `stats_config` of an Istio sidecar with default settings: stats tags and the
/// stats matcher.
pub fn stats_config() -> Value {
    let file: Value = serde_json::from_str(STATS_CONFIG).expect("tests/istio stats config is JSON");
    file["stats_config"].clone()
}

/// The outbound cluster a sidecar has for `port` of service `host` (an FQDN), as istiod names
/// it: `outbound|<port>||<host>`.
pub fn outbound_cluster(port: u16, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// The sidecar of a workload calling `service` (an FQDN) on port 8080, whose replicas listen on
/// `replicas` (loopback ports): one listener on `listen` routing to the outbound cluster with
/// istiod's default retry policy as it was through Istio 1.23 (1.24 dropped 503 from it by
/// default: `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`), round robin over the replicas.
pub fn caller_bootstrap(
    caller: &Pod,
    service: &str,
    replicas: &[u16],
    listen: u16,
    admin: u16,
) -> Value {
    let cluster = outbound_cluster(8080, service);
    let endpoints: Vec<Value> = replicas
        .iter()
        .map(|port| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}))
        .collect();
    let retry_policy = json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retriable_status_codes": [503],
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
        }],
        "host_selection_retry_max_attempts": 5
    });
    let route_config = json!({"name": "8080", "virtual_hosts": [{
        "name": format!("{service}:8080"), "domains": ["*"],
        // Istio sets this on outbound virtual hosts; the callee sees 1, 2, 3.
        "include_request_attempt_count": true,
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "retry_policy": retry_policy}}]
    }]});
    json!({
        "node": caller.node(),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [{
                "name": "virtualOutbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "outbound_0.0.0.0_8080",
                        "route_config": route_config,
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }],
            "clusters": [{
                "name": cluster,
                "alt_stat_name": format!("{cluster};"),
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": endpoints}]}
            }]
        }
    })
}

/// A pod of a Deployment with an injected sidecar.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    /// The Deployment; the injector passes it as `ISTIO_META_WORKLOAD_NAME`.
    pub workload: String,
    /// The pod name: the ReplicaSet's name plus a suffix.
    pub name: String,
    /// The pod's labels as Kubernetes has them, `pod-template-hash` included.
    pub labels: Vec<(String, String)>,
    pub ip: String,
}

impl Pod {
    /// Replica `index` of Deployment `workload`, with `labels` plus what the Deployment
    /// controller (`pod-template-hash`) and the injector (`security.istio.io/tlsMode`,
    /// `service.istio.io/canonical-*`) add.
    pub fn of_deployment(
        namespace: &str,
        workload: &str,
        labels: &[(String, String)],
        index: usize,
    ) -> Pod {
        const HASH: &str = "7d9f5c";
        let mut all: Vec<(String, String)> = labels.to_vec();
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let canonical_name = label("app").unwrap_or_else(|| workload.to_owned());
        let canonical_revision = label("version").unwrap_or_else(|| "latest".to_owned());
        for (key, value) in [
            (POD_TEMPLATE_HASH, HASH.to_owned()),
            ("security.istio.io/tlsMode", "istio".to_owned()),
            ("service.istio.io/canonical-name", canonical_name),
            ("service.istio.io/canonical-revision", canonical_revision),
        ] {
            if !all.iter().any(|(k, _)| k == key) {
                all.push((key.to_owned(), value));
            }
        }
        Pod {
            namespace: namespace.to_owned(),
            workload: workload.to_owned(),
            name: format!("{workload}-{HASH}-{:05}", index),
            labels: all,
            ip: "127.0.0.1".to_owned(),
        }
    }

    /// The bootstrap's `node` as pilot-agent writes it for this pod.
    pub fn node(&self) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .filter(|(key, _)| key != POD_TEMPLATE_HASH)
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect();
        let app = self
            .labels
            .iter()
            .find(|(key, _)| key == "app")
            .map(|(_, value)| value.as_str());
        // serviceClusterOrDefault: the app label, else the workload name, then the namespace.
        let cluster = format!("{}.{}", app.unwrap_or(&self.workload), self.namespace);
        json!({
            "id": format!("sidecar~{}~{}.{}~{}.svc.cluster.local", self.ip, self.name, self.namespace, self.namespace),
            "cluster": cluster,
            "metadata": {
                "ANNOTATIONS": {"kubectl.kubernetes.io/default-container": self.workload, "sidecar.istio.io/status": "{}"},
                "APP_CONTAINERS": self.workload,
                "CLUSTER_ID": "Kubernetes",
                "ENVOY_PROMETHEUS_PORT": 15090,
                "ENVOY_STATUS_PORT": 15021,
                "INSTANCE_IPS": self.ip,
                "INTERCEPTION_MODE": "REDIRECT",
                "ISTIO_VERSION": ISTIO_VERSION,
                "LABELS": labels,
                "MESH_ID": "cluster.local",
                "NAME": self.name,
                "NAMESPACE": self.namespace,
                "NODE_NAME": "node-1",
                "OWNER": format!("kubernetes://apis/apps/v1/namespaces/{}/deployments/{}", self.namespace, self.workload),
                "PILOT_SAN": ["istiod.istio-system.svc"],
                "POD_PORTS": "[{\"containerPort\":8080,\"protocol\":\"TCP\"}]",
                "SERVICE_ACCOUNT": "default",
                "WORKLOAD_NAME": self.workload,
            }
        })
    }
}

/// What a WasmPlugin's `failStrategy` does when the module cannot be fetched or verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailStrategy {
    FailOpen,
    FailClose,
}

/// A WasmPlugin as the chart renders it, reduced to what reaches the sidecar.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    pub namespace: String,
    pub name: String,
    /// Where pilot-agent finds the module once fetched (it rewrites `code.remote` to this file).
    pub module: PathBuf,
    /// `spec.sha256`, lower-case hex; `None` when the plugin is not pinned.
    pub sha256: Option<String>,
    pub fail_strategy: FailStrategy,
    /// `spec.pluginConfig`, as the JSON istiod marshals it.
    pub plugin_config: String,
}

impl WasmPlugin {
    /// The HTTP filter's name, which is also the ECDS resource's name.
    pub fn resource_name(&self) -> String {
        format!(
            "{WASM_PLUGIN_RESOURCE_PREFIX}{}.{}",
            self.namespace, self.name
        )
    }

    /// The filter istiod puts in the inbound listener's HTTP filter chain (`match` mode SERVER):
    /// config discovery with no default config and no initial fetch timeout. Envoy reads the
    /// resource from `ecds_file` instead of istiod's ADS stream.
    pub fn http_filter(&self, ecds_file: &Path) -> Value {
        json!({
            "name": self.resource_name(),
            "config_discovery": {
                "config_source": {
                    "path_config_source": {"path": ecds_file.display().to_string()},
                    "initial_fetch_timeout": "0s",
                },
                // RBAC too: that is what pilot-agent sends in place of a module it could not fetch.
                "type_urls": [WASM_TYPE, RBAC_TYPE],
            }
        })
    }

    /// The ECDS resource Envoy receives: pilot-agent fetched the module and checked its
    /// sha256, or, when that failed, what it sends instead. `Err` when nothing reaches Envoy
    /// (FAIL_CLOSE: the agent NACKs istiod and forwards nothing).
    pub fn delivered_resource(&self) -> Result<Value, String> {
        match self.fetch() {
            Ok(()) => Ok(self.wasm_resource()),
            Err(reason) => match self.fail_strategy {
                FailStrategy::FailOpen => Ok(allow_all(&self.resource_name())),
                FailStrategy::FailClose => Err(reason),
            },
        }
    }

    /// pilot-agent's fetch step: the module must exist and match `sha256` when one is given.
    fn fetch(&self) -> Result<(), String> {
        let bytes =
            fs::read(&self.module).map_err(|e| format!("fetch {}: {e}", self.module.display()))?;
        match &self.sha256 {
            Some(expected) if *expected != sha256_hex(&bytes) => Err(format!(
                "module {} has checksum {}, which does not match: {expected}",
                self.module.display(),
                sha256_hex(&bytes)
            )),
            _ => Ok(()),
        }
    }

    fn wasm_resource(&self) -> Value {
        json!({
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": self.resource_name(),
            "typed_config": {
                "@type": WASM_TYPE,
                "config": {
                    "name": format!("{}.{}", self.namespace, self.name),
                    // istiod sets no root_id without spec.pluginName, and never a vm_id.
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.plugin_config,
                    },
                    "vm_config": {
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": self.module.display().to_string()}},
                    },
                    // Istio 1.25+ sets failure_policy for 1.25+ proxies; the effect is the same.
                    "fail_open": self.fail_strategy == FailStrategy::FailOpen,
                }
            }
        })
    }
}

/// The allow-all RBAC filter pilot-agent puts in place of a module it could not fetch when the
/// WasmPlugin fails open (1.19 to current).
fn allow_all(resource_name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": resource_name,
        "typed_config": {"@type": RBAC_TYPE},
    })
}

/// Writes `resources` as the ECDS file Envoy watches: a discovery response with `version`,
/// written next to `path` and renamed over it, since Envoy reloads a watched file on a move.
pub fn write_ecds(path: &Path, version: u64, resources: &[Value]) -> io::Result<()> {
    let response = json!({"version_info": version.to_string(), "resources": resources});
    let staged = path.with_extension("staged");
    fs::write(&staged, serde_json::to_vec_pretty(&response)?)?;
    fs::rename(&staged, path)
}

/// Lower-case hex sha256, as in a WasmPlugin's `sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> Pod {
        let labels =
            [("app", "reviews"), ("version", "v2")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        Pod::of_deployment("demo", "reviews-v2", &labels, 0)
    }

    #[test]
    fn node_is_what_pilot_agent_writes() {
        let node = reviews().node();
        assert_eq!(
            node["id"],
            "sidecar~127.0.0.1~reviews-v2-7d9f5c-00000.demo~demo.svc.cluster.local"
        );
        assert_eq!(node["cluster"], "reviews.demo");
        let metadata = &node["metadata"];
        assert_eq!(metadata["WORKLOAD_NAME"], "reviews-v2");
        assert_eq!(metadata["NAMESPACE"], "demo");
        assert_eq!(metadata["LABELS"]["version"], "v2");
        assert_eq!(
            metadata["LABELS"]["service.istio.io/canonical-name"],
            "reviews"
        );
        assert!(metadata["LABELS"].get(POD_TEMPLATE_HASH).is_none());
        assert!(reviews().labels.iter().any(|(k, _)| k == POD_TEMPLATE_HASH));
    }

    #[test]
    fn stats_config_has_istios_unanchored_tags_and_keeps_wasm_stats() {
        let config = stats_config();
        assert_eq!(config["use_all_default_tags"], false);
        let tags = config["stats_tags"].as_array().expect("tags");
        assert!(tags.iter().any(|t| t["regex"] == "(cache\\.(.+?)\\.)"));
        assert!(tags.iter().any(|t| t["regex"] == "(component\\.(.+?)\\.)"));
        let patterns = config["stats_matcher"]["inclusion_list"]["patterns"]
            .as_array()
            .expect("patterns");
        assert!(patterns.iter().any(|p| p["prefix"] == "wasm"));
    }

    #[test]
    fn a_module_that_fails_its_checksum_becomes_allow_all_or_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let module = dir.path().join("plugin.wasm");
        fs::write(&module, b"\0asm module").expect("write module");
        let mut plugin = WasmPlugin {
            namespace: "demo".into(),
            name: "boifi-plugin".into(),
            module,
            sha256: Some(sha256_hex(b"\0asm module")),
            fail_strategy: FailStrategy::FailOpen,
            plugin_config: "{}".into(),
        };
        let good = plugin.delivered_resource().expect("delivered");
        assert_eq!(good["typed_config"]["@type"], WASM_TYPE);
        assert_eq!(good["typed_config"]["config"]["name"], "demo.boifi-plugin");
        assert_eq!(
            good["name"],
            "extenstions.istio.io/wasmplugin/demo.boifi-plugin"
        );

        plugin.sha256 = Some("0".repeat(64));
        let replaced = plugin.delivered_resource().expect("fail open");
        assert_eq!(replaced["typed_config"]["@type"], RBAC_TYPE);
        plugin.fail_strategy = FailStrategy::FailClose;
        assert!(plugin.delivered_resource().is_err());
    }

    #[test]
    fn ecds_file_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ecds.json");
        write_ecds(&path, 1, &[json!({"a": 1})]).expect("first");
        write_ecds(&path, 2, &[json!({"a": 2})]).expect("second");
        let written: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
        assert_eq!(written["version_info"], "2");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}
