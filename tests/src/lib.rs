//! Test harness shared by BOIFI's crates.
//!
//! - [`bench`]: what the benchmark binaries share (a count argument, quantiles).
//! - [`binaries`]: where every program under test comes from (cargo for the workspace
//!   binaries, the plugin module, Envoy, etcd, Prometheus, promtool) and the variables that
//!   override each.
//! - [`EtcdServer`]: a real etcd on free loopback ports with a fresh data dir, stopped by PID
//!   on drop; `restart` keeps ports and data.
//! - [`envoy`]: a real Envoy with the real plugin, run as Istio runs a sidecar, and a named
//!   upstream to put behind it.
//! - [`istio`]: what pilot-agent and istiod hand a sidecar (bootstrap, stats tags, the
//!   WasmPlugin over ECDS), reproduced from Istio's source.
//! - [`prometheus`]: a real Prometheus scraping loopback targets, queried over its HTTP API;
//!   [`prometheus::promtool_check_metrics`] lints a `/metrics` page.
//! - [`mesh`]: the local mesh (control plane processes plus workloads of Envoy replicas) used by
//!   the `mesh_*` scenarios, the `boifi-demo` binary and the `bench-plugin` and `bench-fanout`
//!   benchmarks.
//! - [`services`]: policy-api and the sse-broadcaster in this process on one store.
//! - [`process`]: what every process fixture shares: output in a log file, readiness with a
//!   deadline, stop by PID on drop, the log printed when a test fails.
//! - [`http`]: blocking HTTP clients: ureq for whole requests (one-shot, keep-alive), raw
//!   sockets for responses read a piece at a time (event streams).
//! - [`free_port`]: a loopback port that was free a moment ago.
//! - [`wait_until`] / [`wait_until_async`]: poll a condition until it holds or a deadline passes,
//!   instead of sleeping and hoping.
//!
//! The behaviour suite for the policy stores lives in `tests/store_suite.rs`; the end-to-end
//! scenarios on the local mesh in `tests/mesh_*.rs`.

#![forbid(unsafe_code)]

pub mod bench;
pub mod binaries;
pub mod envoy;
mod etcd;
pub mod http;
pub mod istio;
pub mod mesh;
pub mod process;
pub mod prometheus;
pub mod services;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

pub use etcd::EtcdServer;

/// A loopback port the OS reported free. Another process may grab it before the caller binds,
/// so fixtures that use it retry their start.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local addr of bound listener")
        .port()
}

/// Poll interval: short at first (most conditions hold quickly), then backing off so a slow
/// condition does not spin a core on a 2-core machine.
fn next_interval(current: Duration) -> Duration {
    (current * 2).min(Duration::from_millis(100))
}

/// Polls `condition` until it returns true (then `true`) or `deadline` passes (then `false`).
/// The condition is always checked at least once, and once more at the deadline.
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    let mut interval = Duration::from_millis(5);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = next_interval(interval);
    }
}

/// Async form of [`wait_until`]: awaits `condition()` until it yields true or `deadline` passes.
/// The deadline is checked between polls; a single hung `condition()` future is not cut short,
/// so wrap such calls in `tokio::time::timeout`.
pub async fn wait_until_async<F, Fut>(deadline: Instant, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut interval = Duration::from_millis(5);
    loop {
        if condition().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = next_interval(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable_and_nonzero() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port reported free can be bound");
    }

    #[test]
    fn wait_until_true_and_false() {
        let mut calls = 0;
        assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
            calls += 1;
            calls >= 3
        }));
        assert_eq!(calls, 3);
        let start = Instant::now();
        assert!(!wait_until(start + Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn wait_until_async_true_and_false() {
        let mut calls = 0;
        assert!(
            wait_until_async(Instant::now() + Duration::from_secs(5), || {
                calls += 1;
                let done = calls >= 2;
                async move { done }
            })
            .await
        );
        let start = Instant::now();
        assert!(!wait_until_async(start + Duration::from_millis(30), || async { false }).await);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
