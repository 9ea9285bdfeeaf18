//! The one store watch behind every client.
//!
//! It loads a snapshot, then watches from that snapshot's revision, feeding each change
//! through the [`Model`] into the [`Hub`]. A lost watch is reopened from the last revision
//! applied, after an exponential backoff with jitter (so a fleet of broadcasters does not hit a
//! restarted etcd in step). The store only yields changes after the revision asked for, and
//! changes at or below the last applied revision are dropped, so nothing is missed, repeated or
//! reordered. When the store has compacted that revision away, a fresh snapshot is loaded and
//! its difference from the model is sent as ordinary events, so clients stay connected.
//!
//! The same loop applies rule expiries when the clock reaches them. It ends when the hub is
//! shut down (the owning `Broadcaster` is shut down or dropped).

use std::sync::Arc;
use std::time::Duration;

use boifi_store::{Clock, PolicyStore, Revision, Snapshot, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;
use tokio::time::Instant;

use crate::config::Settings;
use crate::hub::Hub;
use crate::model::Model;

/// A watch that lived this long before failing was healthy: the next failure starts the
/// backoff from the beginning again.
const STABLE_WATCH: Duration = Duration::from_secs(30);

/// Exponential backoff: each delay is drawn from the upper half of a window that doubles from
/// `min` to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    window: Duration,
}

impl Backoff {
    pub fn new(settings: &Settings) -> Backoff {
        let min = settings.backoff_min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: settings.backoff_max.max(min),
            window: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let window = self.window;
        self.window = (self.window * 2).min(self.max);
        let half = window / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=jitter_ns))
    }

    pub fn reset(&mut self) {
        self.window = self.min;
    }
}

enum Phase {
    Load,
    Connect,
    Streaming {
        stream: WatchStream,
        opened: Instant,
    },
    Backoff {
        until: Instant,
        reload: bool,
    },
}

enum Outcome {
    Snapshot(Snapshot),
    Opened(WatchStream),
    Event(Box<WatchEvent>),
    Failed(StoreError),
    Waited,
}

/// One step of store I/O in the current phase. Cancel-safe: dropping it leaves `phase` usable.
async fn step(store: &dyn PolicyStore, phase: &mut Phase, revision: Revision) -> Outcome {
    match phase {
        Phase::Load => match store.snapshot().await {
            Ok(snapshot) => Outcome::Snapshot(snapshot),
            Err(err) => Outcome::Failed(err),
        },
        Phase::Connect => match store.watch(revision).await {
            Ok(stream) => Outcome::Opened(stream),
            Err(err) => Outcome::Failed(err),
        },
        Phase::Streaming { stream, .. } => match stream.next().await {
            Some(Ok(event)) => Outcome::Event(Box::new(event)),
            Some(Err(err)) => Outcome::Failed(err),
            None => Outcome::Failed(StoreError::Unavailable("watch stream ended".to_owned())),
        },
        Phase::Backoff { until, .. } => {
            tokio::time::sleep_until(*until).await;
            Outcome::Waited
        }
    }
}

/// Resolves when the next expiry is due; never when there is none.
async fn expiry_due(clock: &dyn Clock, at_ms: Option<u64>) {
    match at_ms {
        Some(at_ms) => clock.sleep_until_ms(at_ms).await,
        None => std::future::pending().await,
    }
}

/// Runs until the hub shuts down.
pub(crate) async fn watch_store(store: Arc<dyn PolicyStore>, clock: Arc<dyn Clock>, hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown_signal();
    let mut model = Model::default();
    let mut loaded = false;
    let mut phase = Phase::Load;
    let mut backoff = Backoff::new(&hub.settings);
    loop {
        let next_expiry = if loaded { model.next_expiry() } else { None };
        let outcome = tokio::select! {
            biased;
            _ = shutdown.wait_for(|down| *down) => return,
            () = expiry_due(&*clock, next_expiry) => {
                let deltas = model.expire(clock.now_ms());
                if !deltas.is_empty() {
                    hub.commit(model.revision, model.halted, model.policies(), deltas, true, std::time::Instant::now());
                }
                continue;
            }
            outcome = step(&*store, &mut phase, model.revision) => outcome,
        };
        phase = match outcome {
            Outcome::Snapshot(snapshot) => {
                let received = std::time::Instant::now();
                log::info!(
                    "loaded snapshot at revision {} ({} policies, halted: {})",
                    snapshot.revision,
                    snapshot.policies.len(),
                    snapshot.halted
                );
                backoff.reset();
                let deltas = model.replace(snapshot, clock.now_ms());
                hub.commit(
                    model.revision,
                    model.halted,
                    model.policies(),
                    deltas,
                    true,
                    received,
                );
                loaded = true;
                Phase::Connect
            }
            Outcome::Opened(stream) => {
                log::debug!("watching the store after revision {}", model.revision);
                Phase::Streaming {
                    stream,
                    opened: Instant::now(),
                }
            }
            Outcome::Event(event) => {
                let received = std::time::Instant::now();
                if event.revision <= model.revision {
                    log::warn!(
                        "ignoring store change at revision {} (already at {})",
                        event.revision,
                        model.revision
                    );
                    continue;
                }
                backoff.reset();
                let deltas = model.apply(*event, clock.now_ms());
                hub.commit(
                    model.revision,
                    model.halted,
                    model.policies(),
                    deltas,
                    false,
                    received,
                );
                continue;
            }
            Outcome::Failed(StoreError::Compacted { requested, oldest }) => {
                log::warn!(
                    "store compacted past revision {requested} (oldest: {oldest}); reloading a snapshot"
                );
                hub.metrics.snapshot_reloads.inc();
                Phase::Load
            }
            Outcome::Failed(err) => {
                if let Phase::Streaming { opened, .. } = &phase {
                    hub.metrics.watch_restarts.inc();
                    if opened.elapsed() >= STABLE_WATCH {
                        backoff.reset();
                    }
                }
                let delay = backoff.next_delay();
                let what = match phase {
                    Phase::Load => "snapshot",
                    _ => "watch",
                };
                log::warn!("store {what} failed: {err}; retrying in {delay:?}");
                Phase::Backoff {
                    until: Instant::now() + delay,
                    reload: !loaded,
                }
            }
            Outcome::Waited => match phase {
                Phase::Backoff { reload: true, .. } => Phase::Load,
                _ => Phase::Connect,
            },
        };
    }
}

/// Sends a `: ping` to every stream client each `heartbeat`, until the hub shuts down.
pub(crate) async fn heartbeat(hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown_signal();
    let period = hub.settings.heartbeat.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            _ = ticker.tick() => hub.ping(),
        }
    }
}

#[cfg(test)]
mod tests;
