//! Sidecar status (`docs/sidecar-status.md`): policy-api gathers the sidecar tables of every
//! sse-broadcaster replica and answers `GET /v1/sidecars`, `status.enforcement` and
//! `status.injected` from them.
//!
//! - [`SidecarSource`]: where the tables come from, one page of one replica at a time;
//!   [`Broadcasters`] asks the replicas of `BOIFI_BROADCASTERS` over HTTP, `boifi serve`
//!   reads its own broadcaster in process.
//! - [`gather`]: every replica, page by page, in parallel; a replica that fails is listed as
//!   unreachable, never an error of the request.
//! - [`SidecarView`]: one gathering merged (a sidecar on two replicas: the latest `last_seen`
//!   wins) and indexed: enforcement of a selector at a revision, injected counts per policy,
//!   a filtered page.
//! - [`Sidecars`]: the gatherer behind a short cache, shared by every request.
//! - [`SidecarListQuery`]: the query of `GET /v1/sidecars`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_policy::wire::UnreachableReplica;
use tokio::sync::Mutex;

mod gather;
mod query;
mod remote;
mod view;

pub use gather::{gather, SidecarSource, MAX_SIDECARS_PER_REPLICA, PAGE_SIZE};
pub use query::{SidecarListQuery, DEFAULT_LIMIT, MAX_LIMIT};
pub use remote::{parse_broadcasters, BroadcasterUrl, Broadcasters, PAGE_TIMEOUT};
pub use view::{ReplicaRead, SidecarView, MAX_LAGGING_NAMES};

/// How long one gathering answers reads: the tables are at most this much older than the
/// request (plus the time to gather), and a burst of reads costs one gathering.
pub const MAX_AGE: Duration = Duration::from_millis(500);
/// A gathering younger than this answers every read, whatever it asks for: reads of a policy
/// the replicas have not seen yet gather at most this often.
pub const MIN_AGE: Duration = Duration::from_millis(50);

/// One gathering, and when it started.
struct Gathered {
    started: Instant,
    view: Arc<SidecarView>,
}

/// The last gathering, and the replicas it could not read (to log changes only).
#[derive(Default)]
struct Last {
    gathered: Option<Gathered>,
    unreachable: BTreeSet<String>,
}

/// The sidecar tables of every replica, gathered at most once per `max_age`.
pub struct Sidecars {
    source: Arc<dyn SidecarSource>,
    max_age: Duration,
    last: Mutex<Last>,
}

impl Sidecars {
    /// Tables from `source`, kept [`MAX_AGE`].
    pub fn new(source: Arc<dyn SidecarSource>) -> Sidecars {
        Sidecars::with_max_age(source, MAX_AGE)
    }

    pub fn with_max_age(source: Arc<dyn SidecarSource>, max_age: Duration) -> Sidecars {
        Sidecars {
            source,
            max_age,
            last: Mutex::new(Last::default()),
        }
    }

    /// The tables as of at most `max_age` ago, and from replicas that all serve `revision`
    /// or later: a read about a policy just written (`apply --wait` reads it right after the
    /// write) does not get tables gathered before the replicas knew of it, which could only
    /// say that no sidecar enforces it; such a read gathers again, at most every
    /// [`MIN_AGE`]. One gathering at a time: requests that arrive meanwhile wait for it and
    /// take its result (it started after they arrived), so a slow replica does not make every
    /// waiting request gather again.
    pub async fn view(&self, revision: u64) -> Arc<SidecarView> {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(gathered) = last.gathered.as_ref() {
            let age = gathered.started.elapsed();
            let recent = age < self.max_age && gathered.view.revision() >= revision;
            if gathered.started >= arrived || age < MIN_AGE.min(self.max_age) || recent {
                return Arc::clone(&gathered.view);
            }
        }
        let started = Instant::now();
        let source = Arc::clone(&self.source);
        let view = tokio::task::spawn_blocking(move || SidecarView::build(gather(&*source)))
            .await
            .unwrap_or_else(|e| {
                log::error!("gathering the sidecar tables failed: {e}");
                SidecarView::build(vec![ReplicaRead {
                    address: "all".to_owned(),
                    outcome: Err("gathering failed".to_owned()),
                }])
            });
        log_changes(&mut last.unreachable, view.unreachable());
        let view = Arc::new(view);
        last.gathered = Some(Gathered {
            started,
            view: Arc::clone(&view),
        });
        view
    }
}

/// Warns when a replica stops answering and says when it answers again (not on every
/// gathering: reads gather up to twice a second).
fn log_changes(known: &mut BTreeSet<String>, unreachable: &[UnreachableReplica]) {
    let now: BTreeSet<String> = unreachable.iter().map(|r| r.address.clone()).collect();
    for replica in unreachable {
        if !known.contains(&replica.address) {
            log::warn!(
                "broadcaster {} did not give its sidecar table: {} (its sidecars are left out \
                 of sidecar status until it does)",
                replica.address,
                replica.error
            );
        }
    }
    for address in known.difference(&now) {
        log::info!("broadcaster {address} is no longer unreachable");
    }
    *known = now;
}
