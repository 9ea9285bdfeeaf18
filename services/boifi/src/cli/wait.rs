//! `boifi apply --wait`: after the writes, wait until every live sidecar each policy selects
//! enforces the policy's revision, as the policy's `status.enforcement` says (policy-api
//! gathers it from the broadcasters' sidecar tables, at most 500 ms old).
//!
//! A policy is done when its enforcement counts every selected sidecar as enforcing and every
//! broadcaster replica answered (a replica that did not answer may hold sidecars that do not
//! enforce it yet). A policy that selects no live sidecar is done at once, with a warning:
//! there is nothing to wait for, and a sidecar that starts later gets the policy in its first
//! snapshot. The revision waited for is the policy's current one: someone else's later write
//! includes ours. A sidecar reports a revision only once every plugin VM of its Envoy (one
//! per worker thread) applies it (`wasm/plugin/src/applied.rs`), so nothing more is waited
//! for once the API says so. At the timeout, each policy still waiting is named with its
//! lagging sidecars, and the command fails (exit 1).

use std::time::{Duration, Instant};

use boifi_policy::{Enforcement, Policy};

use super::client::{policy_path, Client};
use super::error::CliError;
use super::status::{lagging_line, no_sidecar_status};
use super::Io;

/// Time between two looks (the server's view is at most 500 ms old anyway).
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Where one policy stands, from one read of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every selected sidecar enforces `revision`.
    Enforced { revision: u64, sidecars: u64 },
    /// It selects no live sidecar.
    NoSidecars { revision: u64 },
    /// Some selected sidecar does not enforce `revision` yet, or a broadcaster replica did not
    /// answer.
    Waiting {
        revision: u64,
        enforcement: Enforcement,
    },
}

impl Progress {
    /// What the read `policy` says; an error when the server does not report sidecar status.
    pub fn of(policy: &Policy) -> Result<Progress, CliError> {
        let status = policy.status.clone().unwrap_or_default();
        let revision = status.revision;
        let enforcement = status.enforcement.ok_or_else(no_sidecar_status)?;
        Ok(match enforcement {
            e if e.unreachable_replicas > 0 => Progress::Waiting {
                revision,
                enforcement: e,
            },
            e if e.selected == 0 => Progress::NoSidecars { revision },
            e if e.enforcing >= e.selected && e.lagging_count == 0 => Progress::Enforced {
                revision,
                sidecars: e.selected,
            },
            e => Progress::Waiting {
                revision,
                enforcement: e,
            },
        })
    }

    /// Why a policy still waiting is not done, for the timeout's message.
    pub fn why_waiting(&self) -> String {
        let Progress::Waiting {
            revision,
            enforcement,
        } = self
        else {
            return String::new();
        };
        let mut why = format!(
            "{} of {} selected sidecars enforce revision {revision}",
            enforcement.enforcing, enforcement.selected
        );
        if enforcement.lagging_count > 0 {
            why.push_str(&format!("; lagging: {}", lagging_line(enforcement)));
        }
        if enforcement.unreachable_replicas > 0 {
            why.push_str(&format!(
                "; {} broadcaster replica(s) did not answer, their sidecars are unknown",
                enforcement.unreachable_replicas
            ));
        }
        why
    }
}

/// Waits until each of `names` is enforced (or selects nothing), at most `timeout`; prints a
/// line per policy as it is done.
pub fn wait(
    client: &Client,
    names: &[String],
    timeout: Duration,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pending: Vec<&String> = names.iter().collect();
    let mut failed = 0;
    loop {
        let mut still = Vec::new();
        for name in pending {
            let subject = format!("policy/{name}");
            let progress = client
                .get_json::<Policy>(&policy_path(name))
                .and_then(|policy| Progress::of(&policy));
            match progress {
                Ok(Progress::Enforced { revision, sidecars }) => writeln!(
                    io.out,
                    "{subject} enforced by {sidecars} sidecars at revision {revision} ({:.1}s)",
                    start.elapsed().as_secs_f64()
                )?,
                Ok(Progress::NoSidecars { .. }) => {
                    io.out.flush()?;
                    writeln!(
                        io.err,
                        "warning: {subject} selects no live sidecar: nothing to wait for"
                    )?;
                }
                Ok(waiting) => still.push((name, waiting)),
                Err(e) if e.concerns_every_request() => return Err(e),
                // Deleted meanwhile (404): reported, the others go on.
                Err(e) => {
                    e.report_about(Some(&subject), io.err)?;
                    failed += 1;
                }
            }
        }
        if still.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            io.out.flush()?;
            for (name, progress) in &still {
                writeln!(
                    io.err,
                    "error: policy/{name}: not enforced after {}: {}",
                    humantime::format_duration(timeout),
                    progress.why_waiting()
                )?;
            }
            failed += still.len();
            break;
        }
        pending = still.into_iter().map(|(name, _)| name).collect();
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
    match failed {
        0 => Ok(()),
        n => Err(CliError::Reported(format!(
            "{n} of {} policies not enforced by every selected sidecar",
            names.len()
        ))),
    }
}

#[cfg(test)]
mod tests;
