//! Requests to a workload ([`Req`]) and what a batch of them got back ([`Outcomes`]): statuses,
//! faults by policy, which replica answered, latencies.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::envoy::UPSTREAM_HEADER;
use crate::http::HttpResponse;

/// The header on faulted responses (the plugin's contract).
pub const FAULT_HEADER: &str = "x-boifi-fault";

/// A request to send to a workload.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Self {
        Req {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(path: &str) -> Self {
        Req::new("GET", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// What a batch of requests got back.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub sent: usize,
    /// Requests that got no response (connection or protocol errors).
    pub errors: usize,
    /// The first few errors, for messages.
    pub error_samples: Vec<String>,
    pub statuses: BTreeMap<u16, usize>,
    /// Faulted responses by [`FAULT_HEADER`] value (the policy).
    pub faults: BTreeMap<String, usize>,
    /// Responses by [`UPSTREAM_HEADER`] value: which replica's upstream answered.
    pub served_by: BTreeMap<String, usize>,
    pub latencies: Vec<Duration>,
}

impl Outcomes {
    /// Adds one result.
    pub fn record(&mut self, result: io::Result<HttpResponse>, elapsed: Duration) {
        self.sent += 1;
        self.latencies.push(elapsed);
        match result {
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(e.to_string());
                }
            }
            Ok(r) => {
                *self.statuses.entry(r.status).or_default() += 1;
                if let Some(policy) = r.header(FAULT_HEADER) {
                    *self.faults.entry(policy.to_owned()).or_default() += 1;
                }
                if let Some(upstream) = r.header(UPSTREAM_HEADER) {
                    *self.served_by.entry(upstream.to_owned()).or_default() += 1;
                }
            }
        }
    }

    pub fn merge(&mut self, other: Outcomes) {
        self.sent += other.sent;
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in other.served_by {
            *self.served_by.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }

    /// Responses with this status.
    pub fn status(&self, code: u16) -> usize {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// Responses carrying [`FAULT_HEADER`], whatever the policy.
    pub fn faulted(&self) -> usize {
        self.faults.values().sum()
    }

    /// Responses carrying [`FAULT_HEADER`] with this policy.
    pub fn faulted_by(&self, policy: &str) -> usize {
        self.faults.get(policy).copied().unwrap_or(0)
    }

    /// Responses that reached an upstream.
    pub fn upstream_answered(&self) -> usize {
        self.served_by.values().sum()
    }

    /// The `q` quantile (0..=1) of the latencies, nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        let rank = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Some(sorted[rank])
    }

    pub fn min_latency(&self) -> Option<Duration> {
        self.latencies.iter().min().copied()
    }

    pub fn max_latency(&self) -> Option<Duration> {
        self.latencies.iter().max().copied()
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent, statuses {:?}, faults {:?}, served by {:?}",
            self.sent, self.statuses, self.faults, self.served_by
        )?;
        if let (Some(p50), Some(max)) = (self.latency_quantile(0.5), self.max_latency()) {
            write!(f, ", latency p50 {p50:?} max {max:?}")?;
        }
        if self.errors > 0 {
            write!(f, ", {} errors {:?}", self.errors, self.error_samples)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_and_quantiles() {
        let mut outcomes = Outcomes::default();
        let response = |status, fault: Option<&str>| HttpResponse {
            status,
            headers: fault
                .map(|f| vec![(FAULT_HEADER.to_owned(), f.to_owned())])
                .unwrap_or_else(|| vec![(UPSTREAM_HEADER.to_owned(), "a-0".to_owned())]),
            body: Vec::new(),
        };
        for i in 0..10u64 {
            let r = if i < 3 {
                Ok(response(503, Some("p")))
            } else {
                Ok(response(200, None))
            };
            outcomes.record(r, Duration::from_millis(i));
        }
        outcomes.record(
            Err(io::Error::new(io::ErrorKind::TimedOut, "slow")),
            Duration::from_millis(10),
        );
        assert_eq!(outcomes.sent, 11);
        assert_eq!(outcomes.errors, 1);
        assert_eq!(outcomes.status(503), 3);
        assert_eq!(outcomes.faulted_by("p"), 3);
        assert_eq!(outcomes.upstream_answered(), 7);
        assert_eq!(
            outcomes.latency_quantile(0.5),
            Some(Duration::from_millis(5))
        );
        assert_eq!(outcomes.max_latency(), Some(Duration::from_millis(10)));
        let mut total = Outcomes::default();
        total.merge(outcomes.clone());
        total.merge(outcomes);
        assert_eq!(total.status(200), 14);
    }
}
