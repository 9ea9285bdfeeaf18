//! `boifi serve`: both route sets of the contract in one process.
//!
//! policy-api contributes every one of its routes, including `/v1/health`, `/v1/ready`,
//! `/metrics` and `/v1/sidecars`; the broadcaster contributes only `/v1/config/stream` and
//! registers its metrics in policy-api's registry, so one `/metrics` shows both. policy-api's
//! sidecar status reads the broadcaster's sidecar table in process ([`InProcess`]), not over
//! HTTP.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use boifi_policy::wire::{SidecarsPage, SidecarsQuery, UnreachableReplica};
use boifi_policy_api::sidecars::SidecarSource;
use boifi_policy_api::{AppState, Auth, AuthConfig};
use boifi_runtime::EnvError;
use boifi_sse_broadcaster::{configure_stream, Broadcaster, Settings, SystemClock};
use boifi_store::StoreSettings;
use serde::Deserialize;

/// In-flight requests get this long to finish after the shutdown signal (as in policy-api).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings of `boifi serve`, from the same `BOIFI_*` variables as the two services.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `BOIFI_LISTEN_ADDR`, default `127.0.0.1:8080`.
    pub listen_addr: String,
    pub store: StoreSettings,
    pub auth: AuthConfig,
    /// True when neither `BOIFI_TOKENS_FILE` nor `BOIFI_AUTH_DISABLED` was given and auth was
    /// turned off by default (the caller warns).
    pub auth_off_by_default: bool,
    /// The broadcaster's tunables (`BOIFI_STREAM_*`, `BOIFI_POLL_*`, `BOIFI_MAX_CLIENTS`).
    pub stream: Settings,
    /// `BOIFI_BROADCASTERS` was given: it is ignored (the caller warns), since sidecar status
    /// comes from the broadcaster in this process.
    pub broadcasters_ignored: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    ApiConfig(#[from] boifi_policy_api::ConfigError),
    #[error(transparent)]
    StreamConfig(#[from] boifi_sse_broadcaster::ConfigError),
    #[error("API tokens: {0}")]
    Tokens(String),
    #[error(transparent)]
    Store(#[from] boifi_store::StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Start(#[from] boifi_sse_broadcaster::StartError),
}

/// The variables that decide whether auth is off by default (blank counts as unset).
#[derive(Deserialize)]
struct AuthVars {
    tokens_file: Option<String>,
    auth_disabled: Option<String>,
}

impl ServeConfig {
    /// Parse from key/value pairs. Local use is the point of `boifi serve`, so with no
    /// `BOIFI_TOKENS_FILE` and no `BOIFI_AUTH_DISABLED` it serves without tokens.
    pub fn from_vars<I>(vars: I) -> Result<Self, ServeError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut vars: Vec<(String, String)> = vars.into_iter().collect();
        let auth: AuthVars = boifi_runtime::env::from_vars(vars.iter().cloned())?;
        let auth_off_by_default = auth.tokens_file.is_none() && auth.auth_disabled.is_none();
        if auth_off_by_default {
            vars.push(("BOIFI_AUTH_DISABLED".into(), "true".into()));
        }
        let api = boifi_policy_api::Config::from_vars(vars.iter().cloned())?;
        let stream = boifi_sse_broadcaster::Config::from_vars(vars)?;
        Ok(ServeConfig {
            listen_addr: api.listen_addr,
            store: api.store,
            auth: api.auth,
            auth_off_by_default,
            stream: stream.settings,
            broadcasters_ignored: !api.broadcasters.is_empty(),
        })
    }
}

/// Both halves, sharing one store and one metrics registry.
pub struct Serve {
    api: AppState,
    broadcaster: Broadcaster,
}

impl Serve {
    /// Open the store and start the broadcaster's watch (on the current Tokio runtime).
    pub async fn start(config: &ServeConfig) -> Result<Serve, ServeError> {
        let auth =
            Auth::from_config(&config.auth).map_err(|e| ServeError::Tokens(e.to_string()))?;
        let store = boifi_store::open_store(&config.store).await?;
        let api = AppState::new(Arc::clone(&store), auth)?;
        let broadcaster = Broadcaster::start_with_registry(
            store,
            Arc::new(SystemClock),
            config.stream.clone(),
            api.metrics.registry().clone(),
        )?;
        let api = api.with_sidecars(Arc::new(InProcess(broadcaster.clone())));
        Ok(Serve { api, broadcaster })
    }

    pub fn store_kind(&self) -> &'static str {
        self.api.store.kind()
    }
}

/// The broadcaster of this process as policy-api's only replica.
struct InProcess(Broadcaster);

/// The address of [`InProcess`] in `GET /v1/sidecars` answers.
pub const IN_PROCESS: &str = "in-process";

impl SidecarSource for InProcess {
    fn replicas(&self) -> Vec<Result<String, UnreachableReplica>> {
        vec![Ok(IN_PROCESS.to_owned())]
    }

    fn page(&self, _address: &str, query: &SidecarsQuery) -> Result<SidecarsPage, String> {
        self.0.sidecars(query).map_err(|e| e.to_string())
    }
}

/// Serve `listener` until `shutdown` completes; then end every stream, stop accepting and let
/// in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    serve: Serve,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Serve { api, broadcaster } = serve;
    let app_broadcaster = broadcaster.clone();
    let app = move || {
        boifi_policy_api::app(api.clone()).configure(|cfg| configure_stream(cfg, &app_broadcaster))
    };
    // Open streams would otherwise hold the stop up until the grace period ends.
    boifi_runtime::serve(listener, app, SHUTDOWN_GRACE, shutdown, || {
        broadcaster.shut_down()
    })
    .await
}

/// `boifi serve` as the binary runs it: settings from the process environment, then serve
/// until SIGTERM or Ctrl-C.
pub async fn serve_from_env() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServeConfig::from_vars(boifi_runtime::env::process_vars())?;
    if config.broadcasters_ignored {
        log::warn!(
            "BOIFI_BROADCASTERS is ignored by boifi serve: sidecar status comes from its own \
             broadcaster"
        );
    }
    if config.auth_off_by_default {
        log::warn!(
            "serving WITHOUT authentication (set BOIFI_TOKENS_FILE to require tokens); \
             keep BOIFI_LISTEN_ADDR on loopback"
        );
    }
    let listener = boifi_runtime::bind(&config.listen_addr)?;
    let serve = Serve::start(&config).await?;
    log::info!(
        "boifi serve on http://{} ({} store): API /v1/policies, stream /v1/config/stream",
        listener.local_addr()?,
        serve.store_kind()
    );
    run(listener, serve, boifi_runtime::shutdown_signal()).await?;
    Ok(())
}
