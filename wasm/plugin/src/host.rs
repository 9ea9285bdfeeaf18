//! The only module that calls the proxy-wasm host. Each wrapper turns a host error into `None`
//! or `false` (callers then fail open); none unwraps. The SDK's trait methods unwrap host
//! results, so the contexts call these instead.
//!
//! [`Host`] is what the VM's logic ([`crate::vm`]) may ask of the host; [`Envoy`] answers it
//! with host calls, and the tests answer it with a fake (shared data with Envoy's CAS rules, a
//! clock they set). The few reads only the contexts make (configuration, node metadata, log
//! level) are plain functions here.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

use crate::metrics::Kind;
use crate::request::{HeaderSource, HostFailed};

/// The host as the VM's logic sees it. Every call is on the *effective* context: the one whose
/// callback is running, or the one [`Host::set_effective_context`] chose.
pub trait Host {
    /// Wall clock in ns since the Unix epoch.
    fn now_ns(&self) -> Option<u64>;

    /// A shared-data value and its CAS. Shared by every VM with the same `vm_id` in the
    /// Envoy process: istiod sets none, so by every WasmPlugin's VMs ([`crate::lease::Keys`]).
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);

    /// Writes a shared-data value; with `cas`, only if the value has not changed since.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;

    /// The plugin's name (`PluginConfig.name`; istiod writes `<namespace>.<WasmPlugin name>`).
    fn plugin_name(&self) -> Option<String>;

    /// Arms the root context's tick.
    fn set_tick_period_ms(&self, ms: u64) -> bool;

    /// Makes `context_id` the target of following calls (false: it is gone).
    fn set_effective_context(&self, context_id: u32) -> bool;

    fn resume_http_request(&self) -> bool;

    /// A local reply instead of the upstream's response.
    fn send_http_response(
        &self,
        status: u16,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> bool;

    /// A gRPC trailers-only reply: HTTP 200 with `grpc-status: code`, `grpc-message` and
    /// `headers` as metadata.
    fn send_grpc_response(
        &self,
        code: u8,
        message: Option<&str>,
        headers: Vec<(&str, &str)>,
    ) -> bool;

    /// Whether the current request is gRPC (`content-type: application/grpc[+...]`, not
    /// gRPC-Web), as Envoy decides it for its own local replies.
    fn is_grpc_request(&self) -> bool;

    /// Sets (replaces) a response header.
    fn set_response_header(&self, name: &str, value: &str) -> bool;

    /// Sends a GET with `headers` besides the pseudo-headers to `cluster`; the answer comes to
    /// the root context under the returned token.
    fn dispatch_get(
        &self,
        cluster: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, String>;

    /// `:status` of the call being answered (none: no response).
    fn http_call_response_status(&self) -> Option<String>;

    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>>;

    fn define_metric(&self, kind: Kind, name: &str) -> Option<u32>;

    fn increment_metric(&self, id: u32, by: i64);

    fn record_metric(&self, id: u32, value: u64);

    /// The value of stat `id`: Envoy's, so a counter holds every VM's increments.
    fn metric_value(&self, id: u32) -> Option<u64>;
}

/// The real host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envoy;

impl Host for Envoy {
    fn now_ns(&self) -> Option<u64> {
        let t = hostcalls::get_current_time().ok()?;
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(d.as_nanos()).ok()
    }

    fn plugin_name(&self) -> Option<String> {
        property(&["plugin_name"]).map(lossy_utf8)
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }

    fn set_tick_period_ms(&self, ms: u64) -> bool {
        hostcalls::set_tick_period(Duration::from_millis(ms.min(u64::from(u32::MAX)))).is_ok()
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn resume_http_request(&self) -> bool {
        hostcalls::resume_http_request().is_ok()
    }

    fn send_http_response(
        &self,
        status: u16,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> bool {
        hostcalls::send_http_response(u32::from(status), headers, body).is_ok()
    }

    /// The one call that can panic: the SDK's `send_grpc_response` unwraps the host's answer
    /// (and proxy-wasm 0.2 offers no other way to pass a gRPC status). A host that refuses a
    /// local reply would crash this VM, and Envoy's fail-open policy then lets traffic through.
    fn send_grpc_response(
        &self,
        code: u8,
        message: Option<&str>,
        headers: Vec<(&str, &str)>,
    ) -> bool {
        use proxy_wasm::types::GrpcStatusCode as Code;
        let code = match code {
            1 => Code::Cancelled,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        };
        let metadata = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        hostcalls::send_grpc_response(code, message, metadata).is_ok()
    }

    fn is_grpc_request(&self) -> bool {
        let Ok(Some(value)) =
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "content-type")
        else {
            return false;
        };
        let value = lossy_utf8(value).to_ascii_lowercase();
        value == "application/grpc"
            || value.starts_with("application/grpc+")
            || value.starts_with("application/grpc;")
    }

    fn set_response_header(&self, name: &str, value: &str) -> bool {
        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)).is_ok()
    }

    fn dispatch_get(
        &self,
        cluster: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, String> {
        let mut all = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", authority),
            (":scheme", "http"),
            ("accept", "text/event-stream"),
        ];
        all.extend_from_slice(headers);
        hostcalls::dispatch_http_call(
            cluster,
            all,
            None,
            vec![],
            Duration::from_millis(timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn http_call_response_status(&self) -> Option<String> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
    }

    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn define_metric(&self, kind: Kind, name: &str) -> Option<u32> {
        let kind = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn metric_value(&self, id: u32) -> Option<u64> {
        hostcalls::get_metric(id).ok()
    }
}

/// The current request's headers, as rules read them. Values that are not UTF-8 are converted
/// lossily (a matcher can still see the rest of the value).
pub struct RequestHeaders;

impl HeaderSource for RequestHeaders {
    fn first(&self, name: &str) -> Result<Option<String>, HostFailed> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .map(|value| value.map(lossy_utf8))
            .map_err(|_| HostFailed)
    }

    fn all(&self) -> Result<Vec<(String, String)>, HostFailed> {
        let map = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_err(|_| HostFailed)?;
        Ok(map
            .into_iter()
            .map(|(name, value)| (name, lossy_utf8(value)))
            .collect())
    }
}

fn lossy_utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The plugin configuration (read by the root context on configure).
pub fn plugin_configuration(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
        .ok()
        .flatten()
}

/// A host property, such as node metadata (read on configure).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

pub fn log_level() -> Option<LogLevel> {
    hostcalls::get_log_level().ok()
}
