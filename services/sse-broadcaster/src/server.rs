//! The running broadcaster, its routes and its server.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest};
use boifi_policy::wire::{SidecarsPage, SidecarsQuery};
use boifi_store::{Clock, PolicyStore};
use prometheus::Registry;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::error::{RequestError, StartError};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::sidecars::{self, SidecarTable};
use crate::{ops, stream, watcher};

/// Open streams get this long to end after the shutdown signal (they end at once: the
/// broadcaster closes them before the server stops).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Descriptors the process needs besides its clients' connections (listener, store, epoll,
/// logs, metrics scrapes).
const RESERVED_FILES: u64 = 64;

/// A running broadcaster: the store watcher, the heartbeat and the state the routes read.
/// Clones share one broadcaster; it stops when [`Broadcaster::shut_down`] is called or the last
/// clone is dropped.
#[derive(Clone)]
pub struct Broadcaster {
    owner: Arc<Owner>,
}

struct Owner {
    hub: Arc<Hub>,
    sidecars: Arc<SidecarTable>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.hub.shut_down();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Broadcaster {
    /// Starts watching `store` (on the current Tokio runtime), with metrics in a fresh registry.
    pub fn start(
        store: Arc<dyn PolicyStore>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Result<Broadcaster, StartError> {
        Self::start_with_registry(store, clock, settings, Registry::new())
    }

    /// Like [`Broadcaster::start`], registering the metrics in `registry` (e.g. policy-api's,
    /// so one `/metrics` serves both in `boifi serve`).
    pub fn start_with_registry(
        store: Arc<dyn PolicyStore>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        registry: Registry,
    ) -> Result<Broadcaster, StartError> {
        let sidecars = Arc::new(SidecarTable::new(
            settings.sidecar_ttl,
            // As many sidecars as clients: each tracked sidecar holds a poll at most times.
            settings.max_clients,
            settings.replica.clone(),
            &registry,
        )?);
        let hub = Arc::new(Hub::new(settings, Metrics::new(registry)?));
        let tasks = vec![
            tokio::spawn(watcher::watch_store(store, clock, hub.clone())),
            tokio::spawn(watcher::heartbeat(hub.clone())),
            tokio::spawn(sidecars::sweep(sidecars.clone(), hub.clone())),
        ];
        Ok(Broadcaster {
            owner: Arc::new(Owner {
                hub,
                sidecars,
                tasks,
            }),
        })
    }

    /// Ends every open stream and long poll and stops watching the store. New clients get 503.
    /// Call it when the server starts shutting down, so open streams do not hold it up.
    pub fn shut_down(&self) {
        self.owner.hub.shut_down();
    }

    /// The store revision served, once the first snapshot is loaded.
    pub fn revision(&self) -> Option<u64> {
        self.owner.hub.revision()
    }

    /// The registry holding the broadcaster's metrics.
    pub fn registry(&self) -> &Registry {
        &self.owner.hub.metrics.registry
    }

    /// One page of this broadcaster's sidecar table, as `GET /v1/sidecars` answers it (for
    /// `boifi serve`, whose policy-api reads it in process). `RequestError::Invalid` for a
    /// `continue` token this broadcaster did not give; `Refused` before the first snapshot.
    pub fn sidecars(&self, query: &SidecarsQuery) -> Result<SidecarsPage, RequestError> {
        self.owner.sidecars.page(&self.owner.hub, query)
    }

    fn data(&self) -> web::Data<Hub> {
        web::Data::from(self.owner.hub.clone())
    }

    fn sidecars_data(&self) -> web::Data<SidecarTable> {
        web::Data::from(self.owner.sidecars.clone())
    }
}

/// Mounts `GET /v1/config/stream`.
pub fn configure_stream(cfg: &mut web::ServiceConfig, broadcaster: &Broadcaster) {
    cfg.service(
        web::resource(stream::STREAM_PATH)
            .app_data(broadcaster.data())
            .app_data(broadcaster.sidecars_data())
            .route(web::get().to(stream::config_stream))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Mounts `GET /v1/health`, `GET /v1/ready` and `GET /metrics`. Leave it out where another
/// service already serves these paths (`boifi serve`: policy-api's).
pub fn configure_ops(cfg: &mut web::ServiceConfig, broadcaster: &Broadcaster) {
    for (path, route) in [
        ("/v1/health", web::get().to(ops::health)),
        ("/v1/ready", web::get().to(ops::ready)),
        ("/metrics", web::get().to(ops::metrics)),
    ] {
        cfg.service(
            web::resource(path)
                .app_data(broadcaster.data())
                .route(route)
                .default_service(web::to(method_not_allowed)),
        );
    }
}

/// Mounts `GET /v1/sidecars`: this replica's sidecar table (no token, like the stream). Leave
/// it out where policy-api serves its own `/v1/sidecars` (`boifi serve`: it reads
/// [`Broadcaster::sidecars`] instead).
pub fn configure_sidecars(cfg: &mut web::ServiceConfig, broadcaster: &Broadcaster) {
    cfg.service(
        web::resource("/v1/sidecars")
            .app_data(broadcaster.data())
            .app_data(broadcaster.sidecars_data())
            .route(web::get().to(sidecars::sidecars))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Every route of the standalone broadcaster: [`configure_stream`], [`configure_sidecars`]
/// and [`configure_ops`].
pub fn configure(cfg: &mut web::ServiceConfig, broadcaster: &Broadcaster) {
    configure_stream(cfg, broadcaster);
    configure_sidecars(cfg, broadcaster);
    configure_ops(cfg, broadcaster);
}

async fn method_not_allowed() -> Result<actix_web::HttpResponse, RequestError> {
    Err(RequestError::MethodNotAllowed)
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, RequestError> {
    Err(RequestError::NotFound(req.path().to_owned()))
}

/// Serves `listener` until `shutdown` completes; then ends every stream and poll, stops
/// accepting and lets in-flight requests finish ([`boifi_runtime::serve`]).
pub async fn run(
    listener: TcpListener,
    broadcaster: Broadcaster,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    check_open_files(broadcaster.owner.hub.settings.max_clients);
    let app_broadcaster = broadcaster.clone();
    let app = move || {
        App::new()
            // Not the stream route: a line per answered poll is thousands per change at scale,
            // and formatting it costs more than the answer. Clients show in the metrics; bad
            // stream requests are logged by the handler.
            .wrap(
                actix_web::middleware::Logger::new("%a \"%r\" %s %b %Dms")
                    .exclude(stream::STREAM_PATH),
            )
            .configure(|cfg| configure(cfg, &app_broadcaster))
            .default_service(web::to(not_found))
    };
    // Open streams would otherwise hold the stop up until the grace period ends.
    boifi_runtime::serve(listener, app, SHUTDOWN_GRACE, shutdown, || {
        broadcaster.shut_down()
    })
    .await
}

/// Warns when the client limit does not fit the open files limit: past it, new connections
/// fail at accept instead of getting a 503 the clients back off from.
fn check_open_files(max_clients: usize) {
    let Some(limit) = boifi_runtime::process::open_files_limit() else {
        return;
    };
    if let Some(clients) = clients_within(limit, max_clients) {
        log::warn!(
            "BOIFI_MAX_CLIENTS is {max_clients}, but this process may open only {limit} files: \
             about {clients} clients fit; raise the container's nofile limit or lower \
             BOIFI_MAX_CLIENTS"
        );
    }
}

/// How many clients fit in `limit` descriptors, when fewer than `max_clients`.
fn clients_within(limit: u64, max_clients: usize) -> Option<u64> {
    let fit = limit.saturating_sub(RESERVED_FILES);
    (fit < u64::try_from(max_clients).unwrap_or(u64::MAX)).then_some(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_limit_is_checked_against_the_open_files_limit() {
        assert_eq!(clients_within(1024, 20_000), Some(960));
        assert_eq!(clients_within(20_000, 20_000), Some(19_936));
        assert_eq!(clients_within(1_048_576, 20_000), None);
        assert_eq!(clients_within(10, 5), Some(0));
    }
}
