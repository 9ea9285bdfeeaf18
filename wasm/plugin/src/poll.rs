//! The long-poll client of the sse-broadcaster: when to poll, what to ask, what an answer
//! means.
//!
//! A Wasm plugin only sees complete responses, so it asks
//! `GET <stream_path>?mode=poll&wait_ms=W&revision=N&namespace=..&service=..&labels=..` (the
//! query is `boifi_policy::wire::StreamQuery`, the broadcaster's own parser's type); the
//! broadcaster answers at once with an `event: snapshot` when the client is behind, or after
//! `wait_ms` with only a comment and an `id:`. [`Poller`] is the state machine around that:
//! when the next poll is due, what to ask, and what a response means. On failure it backs off
//! exponentially with jitter (thousands of sidecars must not reconnect in lockstep) and the
//! caller keeps the last good policy set, so faults keep acting (until their expiry) while the
//! control plane is away.

use boifi_policy::wire::{self, EventKind, Filter, Mode, SnapshotData, StreamQuery};
use boifi_policy::{compile, CompiledPolicy, Policy, ValidationErrors, Workload};
use serde_json::value::RawValue;

use crate::config::PluginConfig;
use crate::rng::Rng;

/// Largest poll response read; a snapshot of every allowed policy fits many times over.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most policies taken from one snapshot; the rest are dropped with an error.
pub const MAX_POLICIES: usize = 1024;

/// Why a poll did not give a usable answer. The caller counts it, logs it and keeps its set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("could not send the poll: {0}")]
    Dispatch(String),
    #[error("no response (connection failure or timeout)")]
    NoResponse,
    #[error("no answer within {0} ms; poll abandoned")]
    Stuck(u64),
    #[error("HTTP status {0}")]
    Status(String),
    #[error("response body of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("bad response: {0}")]
    Parse(String),
}

/// The data of an `event: snapshot`.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: u64,
    pub halted: bool,
    /// Each policy on its own, so one bad policy does not cost the others.
    pub policies: Vec<Result<CompiledPolicy, PolicyError>>,
}

/// A policy of a snapshot that the plugin could not use (it is skipped, the rest apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// `metadata.name` when it could be read, else `policies[i]`.
    pub policy: String,
    pub message: String,
}

/// What a poll response told us.
#[derive(Debug)]
pub enum PollOutcome {
    /// A new snapshot: replace the policy set.
    Snapshot(Snapshot),
    /// The wait ran out without a change: keep everything, poll again.
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Next poll at `due_ms`.
    Waiting { due_ms: u64 },
    /// A poll is out; `deadline_ms` is when it counts as lost.
    InFlight {
        token: u32,
        sent_ms: u64,
        deadline_ms: u64,
    },
}

/// The long-poll client state, driven by the root context's tick and call responses.
#[derive(Debug)]
pub struct Poller {
    stream_path: String,
    poll_wait_ms: u64,
    timeout_ms: u64,
    backoff_min_ms: u64,
    backoff_max_ms: u64,
    /// The next poll's query: the filter is computed once from the identity; `revision` is
    /// that of the last snapshot applied (`None` before the first).
    query: StreamQuery,
    failures: u32,
    state: State,
}

/// One poll to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// Path and query.
    pub path: String,
    /// Envoy's timeout for the call.
    pub timeout_ms: u64,
}

impl Poller {
    /// The first poll is due at once. `labels_known` says whether the workload's labels were
    /// read (possibly none); unknown labels widen the broadcaster's filter.
    pub fn new(
        config: &PluginConfig,
        now_ms: u64,
        workload: &Workload,
        labels_known: bool,
    ) -> Self {
        Poller {
            stream_path: config.stream_path.clone(),
            poll_wait_ms: config.poll_wait_ms,
            timeout_ms: config.poll_wait_ms + config.poll_timeout_margin_ms,
            backoff_min_ms: config.backoff_min_ms,
            backoff_max_ms: config.backoff_max_ms,
            query: StreamQuery {
                filter: Filter::for_workload(workload, labels_known),
                mode: Mode::Poll,
                wait_ms: Some(config.poll_wait_ms),
                // Without a revision the broadcaster sends its snapshot at once.
                revision: None,
                last_event_id: None,
            },
            failures: 0,
            state: State::Waiting { due_ms: now_ms },
        }
    }

    /// Consecutive failed polls (0 after a good one).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn revision(&self) -> Option<u64> {
        self.query.revision
    }

    /// Takes the revision of a snapshot another VM fetched, so a poll from here (should this
    /// VM lead) waits for changes after it.
    pub fn adopt(&mut self, revision: u64) {
        self.query.revision = Some(revision);
    }

    /// True when a poll should be sent now.
    pub fn is_due(&self, now_ms: u64) -> bool {
        matches!(self.state, State::Waiting { due_ms } if now_ms >= due_ms)
    }

    /// When the poller next needs the clock: the due time of the next poll, or the deadline of
    /// the one in flight (to notice a response that never comes).
    pub fn wake_at_ms(&self) -> u64 {
        match self.state {
            State::Waiting { due_ms } => due_ms,
            State::InFlight { deadline_ms, .. } => deadline_ms,
        }
    }

    /// The request for the next poll, filtered to this workload.
    pub fn request(&self) -> PollRequest {
        PollRequest {
            path: format!("{}?{}", self.stream_path, self.query.encode()),
            timeout_ms: self.timeout_ms,
        }
    }

    /// The poll was dispatched under `token`.
    pub fn sent(&mut self, token: u32, now_ms: u64) {
        self.state = State::InFlight {
            token,
            sent_ms: now_ms,
            // Envoy's own timeout fires first; this catches a response that is never delivered.
            deadline_ms: now_ms + self.timeout_ms + 1_000,
        };
    }

    /// The dispatch failed or a poll was lost; schedules a retry after backoff and returns the
    /// wait in ms.
    pub fn failed(&mut self, now_ms: u64, rng: &mut impl Rng) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let wait = backoff_ms(self.failures, self.backoff_min_ms, self.backoff_max_ms, rng);
        self.state = State::Waiting {
            due_ms: now_ms + wait,
        };
        wait
    }

    /// Gives up on a poll that outlived its deadline (scheduling a retry) and says so.
    pub fn abandon_if_stuck(&mut self, now_ms: u64, rng: &mut impl Rng) -> Option<FetchError> {
        match self.state {
            State::InFlight {
                sent_ms,
                deadline_ms,
                ..
            } if now_ms >= deadline_ms => {
                self.failed(now_ms, rng);
                Some(FetchError::Stuck(now_ms - sent_ms))
            }
            _ => None,
        }
    }

    /// Whether `token` is the poll in flight (a late answer to an abandoned poll is not).
    pub fn owns(&self, token: u32) -> bool {
        matches!(self.state, State::InFlight { token: t, .. } if t == token)
    }

    /// Handles the response to the poll in flight: `status` is the `:status` header (absent on
    /// connection failure or timeout) and `body` the complete body. On error the caller keeps
    /// its policy set; the retry is already scheduled.
    pub fn on_response(
        &mut self,
        now_ms: u64,
        status: Option<&str>,
        body: &[u8],
        rng: &mut impl Rng,
    ) -> Result<PollOutcome, FetchError> {
        let sent_ms = match self.state {
            State::InFlight { sent_ms, .. } => sent_ms,
            State::Waiting { .. } => now_ms,
        };
        let outcome = interpret(status, body);
        match &outcome {
            Err(_) => {
                self.failed(now_ms, rng);
            }
            Ok(result) => {
                self.failures = 0;
                if let PollOutcome::Snapshot(snapshot) = result {
                    self.query.revision = Some(snapshot.revision);
                }
                // An unchanged answer that came back long before the wait ran out means the
                // server does not hold polls: pace ourselves instead of spinning.
                let early = now_ms.saturating_sub(sent_ms) < self.poll_wait_ms / 2;
                let due_ms = match result {
                    PollOutcome::Unchanged if early => now_ms + self.backoff_min_ms,
                    _ => now_ms,
                };
                self.state = State::Waiting { due_ms };
            }
        }
        outcome
    }
}

/// Exponential backoff with "equal jitter": half of the capped exponential delay, plus a
/// random part up to the other half. Never below half the minimum, never above the maximum.
pub fn backoff_ms(failures: u32, min_ms: u64, max_ms: u64, rng: &mut impl Rng) -> u64 {
    let exponent = failures.saturating_sub(1).min(32);
    let capped = min_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let half = capped / 2;
    half + rng.below(capped - half + 1)
}

fn interpret(status: Option<&str>, body: &[u8]) -> Result<PollOutcome, FetchError> {
    match status {
        None => return Err(FetchError::NoResponse),
        Some("200") => {}
        Some(other) => return Err(FetchError::Status(other.chars().take(16).collect())),
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(FetchError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| FetchError::Parse("not UTF-8".into()))?;
    match snapshot_data(text) {
        None => Ok(PollOutcome::Unchanged),
        Some(data) => parse_snapshot(data).map(PollOutcome::Snapshot),
    }
}

/// The data of the last `snapshot` event in a complete SSE body.
pub fn snapshot_data(body: &str) -> Option<String> {
    wire::sse::last_event_data(body, EventKind::Snapshot.name())
}

/// Parses snapshot data; each policy is parsed and compiled on its own.
pub fn parse_snapshot(data: String) -> Result<Snapshot, FetchError> {
    let raw: SnapshotData<&RawValue> =
        serde_json::from_str(&data).map_err(|e| FetchError::Parse(format!("snapshot: {e}")))?;
    let policies = raw
        .policies
        .iter()
        .enumerate()
        .map(|(i, value)| {
            if i >= MAX_POLICIES {
                return Err(PolicyError {
                    policy: format!("policies[{i}]"),
                    message: format!("more than {MAX_POLICIES} policies; ignored"),
                });
            }
            compile_one(i, value.get())
        })
        .collect();
    Ok(Snapshot {
        revision: raw.revision,
        halted: raw.halted,
        policies,
    })
}

fn compile_one(index: usize, json: &str) -> Result<CompiledPolicy, PolicyError> {
    let policy: Policy = serde_json::from_str(json).map_err(|e| PolicyError {
        policy: format!("policies[{index}]"),
        message: e.to_string(),
    })?;
    compile(&policy).map_err(|e: ValidationErrors| PolicyError {
        policy: policy.metadata.name.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
