//! `boifi watch`: follow `GET /v1/config/stream` (the sse-broadcaster's stream, served by
//! `boifi serve` on the API's port) and print one line per change: time, revision, event,
//! policy.
//!
//! The stream is the one the sidecars read, so what it prints is what they are told. When the
//! stream drops (server restart, `resync` after falling behind, no byte for
//! [`IDLE_TIMEOUT`]: the server pings every 15 s), it reconnects with `Last-Event-ID`, and the
//! broadcaster sends what was missed (or a new snapshot). The first connection must succeed;
//! later ones are retried, the delay growing from the server's `retry:` advice up to
//! [`MAX_RETRY`].

use std::io::BufReader;
use std::time::{Duration, SystemTime};

use boifi_policy::wire::{DeleteData, EventKind, HaltData, SnapshotData, StreamQuery};
use clap::Args;
use serde::Deserialize;
use serde_json::Value;
use ureq::http::Method;
use ureq::Agent;

use super::client::{Client, Connection, ConnectionArgs, MAX_RESPONSE_BYTES};
use super::sse::{Event, EventReader};
use super::{workload_filter, CliError, Io};

/// No byte for this long means the connection is dead (the broadcaster pings every 15 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reconnect delay before the server's advice is known.
const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// The longest wait between reconnection attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The sse-broadcaster's URL [env: BOIFI_STREAM_SERVER] [default: the API server, as
    /// `boifi serve` serves both]
    #[arg(long, value_name = "URL")]
    pub stream_server: Option<String>,
    /// Only what a workload in this namespace receives.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only what this workload (name or `app` label) receives.
    #[arg(long)]
    pub service: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// A policy as far as a line needs it.
#[derive(Debug, Deserialize)]
struct Named {
    metadata: NamedMeta,
}

#[derive(Debug, Deserialize)]
struct NamedMeta {
    name: String,
}

pub fn run(args: &WatchArgs, vars: Vec<(String, String)>, io: &mut Io<'_>) -> Result<(), CliError> {
    let connection = Connection::resolve(&args.connection, args.stream_server.as_deref(), vars)?;
    let filter = workload_filter(args.namespace.as_deref(), args.service.as_deref())?;
    let query = StreamQuery {
        filter,
        ..StreamQuery::default()
    }
    .encode();
    let path = match query.is_empty() {
        true => "/v1/config/stream".to_owned(),
        false => format!("/v1/config/stream?{query}"),
    };
    // Connecting and the answer's headers get `--timeout`; the body runs for as long as it
    // keeps sending (pings included). The stream needs no token, so none is sent.
    let config = Agent::config_builder()
        .timeout_connect(Some(connection.timeout))
        .timeout_recv_response(Some(connection.timeout))
        .timeout_per_read(Some(IDLE_TIMEOUT));
    let client = Client::new(&connection.stream_server, None, config);

    writeln!(io.out, "{}", line("TIME", "REVISION", "EVENT", "POLICY"))?;
    io.out.flush()?;
    let mut last_id: Option<String> = None;
    let mut retry = DEFAULT_RETRY;
    let mut failures: u32 = 0;
    let mut connected_once = false;
    loop {
        let ended = match follow(&client, &path, &mut last_id, &mut retry, io) {
            Ok(reason) => {
                connected_once = true;
                failures = 0;
                reason
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(e)) if !connected_once => return Err(e),
            Err(Failure::Transient(e)) => {
                failures += 1;
                e.to_string()
            }
        };
        let delay = backoff(retry, failures);
        let resume = last_id.as_deref().unwrap_or("none");
        writeln!(
            io.err,
            "watch: {ended}; reconnecting in {}s (Last-Event-ID: {resume})",
            delay.as_secs_f64()
        )?;
        std::thread::sleep(delay);
    }
}

/// Why a connection could not be used.
enum Failure {
    /// Retrying cannot help (a bad filter, a server without the stream route).
    Fatal(CliError),
    /// Worth another try (connection refused, 503, timeout).
    Transient(CliError),
}

/// One connection: prints its events until the stream ends; `Ok` says why it ended.
fn follow(
    client: &Client,
    path: &str,
    last_id: &mut Option<String>,
    retry: &mut Duration,
    io: &mut Io<'_>,
) -> Result<String, Failure> {
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(id) = last_id.as_deref() {
        headers.push(("Last-Event-ID", id));
    }
    let response = client
        .open(Method::GET, path, &headers, None)
        .map_err(Failure::Transient)?;
    let status = response.status().as_u16();
    if status != 200 {
        let reply = super::client::Reply {
            status,
            etag: None,
            body: response
                .into_body()
                .into_with_config()
                .limit(64 * 1024)
                .read_to_vec()
                .unwrap_or_default(),
        };
        let mut error = reply.success().expect_err("not 200");
        if status == 404 {
            error = CliError::Reported(format!(
                "{}{path} is not a stream (404): point --stream-server or \
                 BOIFI_STREAM_SERVER at the sse-broadcaster",
                client.base()
            ));
        }
        return Err(match status {
            500..=599 => Failure::Transient(error),
            _ => Failure::Fatal(error),
        });
    }
    let body = response.into_body().into_reader();
    let mut events = EventReader::new(BufReader::new(body), MAX_RESPONSE_BYTES);
    loop {
        let event = match events.next_event() {
            Ok(Some(event)) => event,
            Ok(None) => return Ok("the stream ended".to_owned()),
            Err(e) => {
                return Ok(format!(
                    "the stream broke: {}",
                    super::client::io_reason(&e)
                ))
            }
        };
        *last_id = events.last_id().map(str::to_owned);
        if let Some(ms) = events.retry_ms() {
            *retry = Duration::from_millis(ms);
        }
        let resync = event.kind == EventKind::Resync.name();
        for text in describe(&event) {
            writeln!(io.out, "{text}").map_err(|e| Failure::Fatal(e.into()))?;
        }
        io.out.flush().map_err(|e| Failure::Fatal(e.into()))?;
        if resync {
            return Ok("the server asked to resync (this client fell behind)".to_owned());
        }
    }
}

/// The lines for one event, stamped with this machine's time.
fn describe(event: &Event) -> Vec<String> {
    let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let revision = event.id.as_deref().unwrap_or("-");
    lines(&time, revision, event)
}

/// The lines for `event` at `time`: one per policy of a snapshot (and `halt on` when the
/// snapshot is halted), one for any other event.
pub fn lines(time: &str, revision: &str, event: &Event) -> Vec<String> {
    let kind = event.kind.as_str();
    let one = |detail: &str| vec![line(time, revision, kind, detail)];
    let name_of = |value: &Value| -> String {
        serde_json::from_value::<Named>(value.clone())
            .map_or_else(|_| "?".to_owned(), |n| n.metadata.name)
    };
    if kind == EventKind::Snapshot.name() {
        let Ok(snapshot) = serde_json::from_str::<SnapshotData<Value>>(&event.data) else {
            return one("?");
        };
        let mut out: Vec<String> = snapshot
            .policies
            .iter()
            .map(|p| line(time, revision, kind, &name_of(p)))
            .collect();
        if out.is_empty() {
            out.push(line(time, revision, kind, "(no policies)"));
        }
        if snapshot.halted {
            out.push(line(time, revision, EventKind::Halt.name(), "on"));
        }
        return out;
    }
    if kind == EventKind::Policy.name() {
        return one(&serde_json::from_str(&event.data).map_or_else(|_| "?".into(), |v| name_of(&v)));
    }
    if kind == EventKind::Delete.name() {
        return one(&serde_json::from_str::<DeleteData>(&event.data)
            .map_or_else(|_| "?".into(), |d| d.name));
    }
    if kind == EventKind::Halt.name() {
        return one(match serde_json::from_str::<HaltData>(&event.data) {
            Ok(HaltData { halted: true }) => "on",
            Ok(HaltData { halted: false }) => "off",
            Err(_) => "?",
        });
    }
    one("-")
}

/// One aligned line.
fn line(time: &str, revision: &str, kind: &str, detail: &str) -> String {
    format!("{time:<20}   {revision:<8}   {kind:<8}   {detail}")
}

/// The wait before reconnecting after `failures` failed attempts in a row: the server's
/// advice, doubled per failure, at most [`MAX_RETRY`].
pub fn backoff(retry: Duration, failures: u32) -> Duration {
    retry.saturating_mul(1 << failures.min(16)).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, id: &str, data: &str) -> Event {
        Event {
            kind: kind.into(),
            data: data.into(),
            id: Some(id.into()),
        }
    }

    const T: &str = "2024-05-01T12:00:00Z";

    #[test]
    fn one_line_per_change() {
        let snapshot = r#"{"revision":41,"halted":true,"policies":[
            {"metadata":{"name":"a"},"spec":{}},{"metadata":{"name":"b"},"spec":{}}]}"#;
        assert_eq!(
            lines(T, "41", &event("snapshot", "41", snapshot)),
            [
                "2024-05-01T12:00:00Z   41         snapshot   a",
                "2024-05-01T12:00:00Z   41         snapshot   b",
                "2024-05-01T12:00:00Z   41         halt       on",
            ]
        );
        let empty = r#"{"revision":3,"halted":false,"policies":[]}"#;
        assert_eq!(
            lines(T, "3", &event("snapshot", "3", empty)),
            ["2024-05-01T12:00:00Z   3          snapshot   (no policies)"]
        );
        let policy = r#"{"metadata":{"name":"reviews-abort"},"spec":{"rules":[]}}"#;
        assert_eq!(
            lines(T, "42", &event("policy", "42", policy)),
            ["2024-05-01T12:00:00Z   42         policy     reviews-abort"]
        );
        assert_eq!(
            lines(
                T,
                "43",
                &event("delete", "43", r#"{"name":"reviews-abort"}"#)
            ),
            ["2024-05-01T12:00:00Z   43         delete     reviews-abort"]
        );
        assert_eq!(
            lines(T, "44", &event("halt", "44", r#"{"halted":false}"#)),
            ["2024-05-01T12:00:00Z   44         halt       off"]
        );
        assert_eq!(
            lines(T, "-", &event("policy", "-", "not json")),
            ["2024-05-01T12:00:00Z   -          policy     ?"]
        );
    }

    #[test]
    fn reconnect_delays_grow_to_a_bound() {
        let advice = Duration::from_secs(3);
        assert_eq!(backoff(advice, 0), advice);
        assert_eq!(backoff(advice, 1), Duration::from_secs(6));
        assert_eq!(backoff(advice, 3), Duration::from_secs(24));
        assert_eq!(backoff(advice, 4), MAX_RETRY);
        assert_eq!(backoff(advice, 1000), MAX_RETRY);
    }
}
