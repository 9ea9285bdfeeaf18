//! The load generator: simulated sidecars, each one keep-alive connection to the broadcaster,
//! asking exactly what the Wasm plugin asks (`wasm/plugin/src/poll.rs`: the query from
//! `StreamQuery::encode` with the filter of `Filter::for_workload`; the headers of its
//! `dispatch_http_call`, with the report header `x-boifi-sidecar` of `wasm/plugin/src/vm.rs`,
//! one pod per sidecar), or holding an event stream with the same filter.
//!
//! Each sidecar records what it receives on a shared [`Board`] the coordinator reads; the time
//! is taken in the sidecar as the response (or event) is complete. The load generator shares
//! the cores with the broadcaster, so it is kept lean: requests are prebuilt per workload and
//! responses parsed in place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_policy::wire::{Filter, Mode, SidecarIdentity, StreamQuery, SIDECAR_HEADER};
use boifi_policy::Workload;
use boifi_tests::bench::{find, response_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The plugin's default `stream_path`.
const STREAM_PATH: &str = "/v1/config/stream";
/// Largest response head or poll body accepted.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;
/// Pause after a failed request before trying again (the plugin backs off from 1 s; shorter
/// here, so a refused connection does not stall a measurement).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How sidecars talk to the broadcaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Long polls, as the plugin does, each held up to `wait_ms`. After a change a sidecar
    /// polls again after a random pause of up to `repoll_spread_ms` (0: at once).
    Poll { wait_ms: u64, repoll_spread_ms: u64 },
    /// One event stream each.
    Stream,
}

/// The identity of workload `index` of `namespaces`: namespace `ns<index % namespaces>`,
/// workload name `svc<index>-v1` (a Deployment name), the labels a Kubernetes Deployment and
/// Istio put on its pods (so the `app` label, `svc<index>`, differs from the workload name, as
/// it usually does).
pub fn workload(index: usize, namespaces: usize) -> Workload {
    let app = app_name(index);
    let labels: BTreeMap<String, String> = [
        ("app", app.clone()),
        ("version", "v1".to_owned()),
        // Deterministic, distinct per workload, the shape of a ReplicaSet hash.
        (
            "pod-template-hash",
            format!(
                "{:010x}",
                (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24
            ),
        ),
        ("security.istio.io/tlsMode", "istio".to_owned()),
        ("service.istio.io/canonical-name", app.clone()),
        ("service.istio.io/canonical-revision", "v1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Workload {
        namespace: namespace_name(index, namespaces),
        name: format!("{app}-v1"),
        labels,
    }
}

pub fn namespace_name(workload: usize, namespaces: usize) -> String {
    format!("ns{}", workload % namespaces.max(1))
}

pub fn app_name(workload: usize) -> String {
    format!("svc{workload}")
}

/// What every sidecar has seen so far, in atomics the coordinator reads (a report per answer
/// on a channel cost the load generator as much as the answer itself).
pub struct Board {
    started: Instant,
    /// Latest revision each sidecar has.
    revision: Vec<AtomicU64>,
    /// When (ns after `started`) each sidecar last got a newer revision.
    reached_ns: Vec<AtomicU64>,
    /// Answers with a change each sidecar got.
    answers: Vec<AtomicU32>,
    /// Whether each sidecar asked again after its last answer.
    asked_again: Vec<AtomicBool>,
    pub timeouts: AtomicUsize,
    pub failures: AtomicUsize,
}

impl Board {
    pub fn new(sidecars: usize) -> Board {
        Board {
            started: Instant::now(),
            revision: (0..sidecars).map(|_| AtomicU64::new(0)).collect(),
            reached_ns: (0..sidecars).map(|_| AtomicU64::new(0)).collect(),
            answers: (0..sidecars).map(|_| AtomicU32::new(0)).collect(),
            asked_again: (0..sidecars).map(|_| AtomicBool::new(false)).collect(),
            timeouts: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.revision.len()
    }

    pub fn revision(&self, sidecar: usize) -> u64 {
        self.revision[sidecar].load(Ordering::Acquire)
    }

    /// When the sidecar got its current revision.
    pub fn reached_at(&self, sidecar: usize) -> Instant {
        self.started + Duration::from_nanos(self.reached_ns[sidecar].load(Ordering::Acquire))
    }

    pub fn answers(&self, sidecar: usize) -> u32 {
        self.answers[sidecar].load(Ordering::Acquire)
    }

    pub fn asked_again(&self, sidecar: usize) -> bool {
        self.asked_again[sidecar].load(Ordering::Acquire)
    }

    fn changed(&self, sidecar: usize, revision: u64) {
        if revision > self.revision[sidecar].load(Ordering::Relaxed) {
            let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.reached_ns[sidecar].store(ns, Ordering::Release);
            self.revision[sidecar].store(revision, Ordering::Release);
        }
        self.answers[sidecar].fetch_add(1, Ordering::AcqRel);
        self.asked_again[sidecar].store(false, Ordering::Release);
    }

    fn unchanged(&self, sidecar: usize, revision: u64) {
        self.revision[sidecar].fetch_max(revision, Ordering::AcqRel);
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.asked_again[sidecar].store(false, Ordering::Release);
    }
}

/// A running fleet of sidecars; dropping it disconnects them all.
pub struct Fleet {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where the sidecars connect and who they are.
pub struct FleetSpec {
    pub addr: SocketAddr,
    pub workloads: usize,
    pub namespaces: usize,
    pub transport: Transport,
    /// Sidecars between connecting and their first answer at once (a burst of thousands would
    /// overflow the listen backlog).
    pub connecting: usize,
}

impl Fleet {
    /// Starts one sidecar per slot of `board` on `runtime`, sidecar `i` running workload
    /// `i % workloads`.
    pub fn start(runtime: &tokio::runtime::Runtime, spec: &FleetSpec, board: Arc<Board>) -> Fleet {
        let gate = Arc::new(Semaphore::new(spec.connecting));
        let workloads: Vec<Workload> = (0..spec.workloads)
            .map(|w| workload(w, spec.namespaces))
            .collect();
        let requests: Vec<Arc<PollRequest>> = workloads
            .iter()
            .map(|w| {
                let filter = Filter::for_workload(w, true);
                Arc::new(PollRequest::new(filter, spec.transport, spec.addr))
            })
            .collect();
        let tasks = (0..board.len())
            .map(|sidecar| {
                let request = requests[sidecar % spec.workloads].clone();
                let report = identity_header(sidecar, &workloads[sidecar % spec.workloads]);
                let gate = gate.clone();
                let client = Sidecar {
                    id: sidecar,
                    addr: spec.addr,
                    board: board.clone(),
                    report,
                    permit: None,
                };
                let transport = spec.transport;
                runtime.spawn(async move {
                    let mut client = client;
                    client.permit = gate.acquire_owned().await.ok();
                    match transport {
                        Transport::Poll {
                            repoll_spread_ms, ..
                        } => client.poll(&request, repoll_spread_ms).await,
                        Transport::Stream => client.stream(&request).await,
                    }
                })
            })
            .collect();
        Fleet { tasks }
    }
}

/// The request head of a workload's sidecars, split around the revision so a poll costs no
/// query encoding: `prefix + revision + suffix`, then the sidecar's own report header and the
/// blank line, is exactly the plugin's request (a unit test checks it).
struct PollRequest {
    /// Up to and including `revision=` (polls).
    prefix: Vec<u8>,
    /// From after the revision to the last shared header line.
    suffix: Vec<u8>,
    /// The first poll (no revision yet), or the stream request, to the last shared header line.
    first: Vec<u8>,
}

impl PollRequest {
    fn new(filter: Filter, transport: Transport, addr: SocketAddr) -> PollRequest {
        let head = |query: &StreamQuery| {
            // The plugin's headers (`:method`, `:path`, `:authority`, `:scheme`, `accept`) as
            // Envoy writes them on an HTTP/1.1 upstream connection.
            format!(
                "GET {STREAM_PATH}?{} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n",
                query.encode()
            )
        };
        let mut query = StreamQuery {
            filter,
            ..StreamQuery::default()
        };
        if let Transport::Poll { wait_ms, .. } = transport {
            query.mode = Mode::Poll;
            query.wait_ms = Some(wait_ms);
        }
        let first = head(&query).into_bytes();
        // A revision no query holds otherwise marks where revisions go.
        const MARK: u64 = 987_654_321_987_654_321;
        query.revision = Some(MARK);
        let marked = head(&query);
        let (prefix, suffix) = marked
            .split_once(&MARK.to_string())
            .expect("the marked revision is in the query");
        PollRequest {
            prefix: prefix.as_bytes().to_vec(),
            suffix: suffix.as_bytes().to_vec(),
            first,
        }
    }

    /// The head of a poll from `revision` (none: the first), with the sidecar's `headers`
    /// (whole lines) last.
    fn write(&self, revision: Option<u64>, headers: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match revision {
            None => out.extend_from_slice(&self.first),
            Some(revision) => {
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(revision.to_string().as_bytes());
                out.extend_from_slice(&self.suffix);
            }
        }
        out.extend_from_slice(headers);
        out.extend_from_slice(b"\r\n");
    }
}

/// The report header the plugin sends with every poll (`SIDECAR_HEADER`: pod, namespace,
/// workload, labels), as a header line; each sidecar is its own pod.
fn identity_header(sidecar: usize, workload: &Workload) -> Vec<u8> {
    let identity = SidecarIdentity {
        pod: format!("{}-{sidecar}", workload.name),
        namespace: workload.namespace.clone(),
        workload: workload.name.clone(),
        labels: Some(workload.labels.clone()),
    };
    match identity.header_value() {
        Ok(header) => format!("{SIDECAR_HEADER}: {}\r\n", header.value).into_bytes(),
        // Not for these names; the poll still goes out, as the plugin's would.
        Err(_) => Vec::new(),
    }
}

struct Sidecar {
    id: usize,
    addr: SocketAddr,
    board: Arc<Board>,
    /// Its report header line, sent with every request.
    report: Vec<u8>,
    /// Held until the first answer.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Sidecar {
    /// The plugin's loop: poll with the last revision, take the answer, poll again: at once,
    /// or after a change within `repoll_spread_ms` (the polling VM waits until every VM of its
    /// Envoy has the change, which they pick up on their 50 ms tick: `wasm/plugin/src/applied.rs`).
    async fn poll(mut self, request: &PollRequest, repoll_spread_ms: u64) {
        let mut revision = None;
        let mut connection: Option<Connection> = None;
        let mut head = Vec::with_capacity(request.first.len() + self.report.len() + 32);
        loop {
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => match TcpStream::connect(self.addr).await {
                    Ok(socket) => connection.insert(Connection::new(socket)),
                    Err(_) => {
                        self.failed().await;
                        continue;
                    }
                },
            };
            request.write(revision, &self.report, &mut head);
            if conn.socket.write_all(&head).await.is_err() {
                connection = None;
                self.failed().await;
                continue;
            }
            self.board.asked_again[self.id].store(true, Ordering::Release);
            let answer = match conn.poll_answer().await {
                Ok(answer) => answer,
                Err(_) => {
                    connection = None;
                    None
                }
            };
            match answer {
                Some(Answer::Change(r)) => {
                    revision = Some(r);
                    self.board.changed(self.id, r);
                    self.permit = None;
                    if repoll_spread_ms > 0 {
                        let draw = boifi_policy::sampling::mix(((self.id as u64) << 32) ^ r);
                        let pause = draw % (repoll_spread_ms + 1);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
                Some(Answer::Unchanged(r)) => {
                    revision = Some(r);
                    self.board.unchanged(self.id, r);
                }
                None => self.failed().await,
            }
        }
    }

    /// One event stream, reconnecting with `Last-Event-ID` when it ends.
    async fn stream(mut self, request: &PollRequest) {
        let mut last_id: Option<u64> = None;
        loop {
            let Ok(socket) = TcpStream::connect(self.addr).await else {
                self.failed().await;
                continue;
            };
            let mut conn = Connection::new(socket);
            let mut head = Vec::new();
            let mut headers = self.report.clone();
            if let Some(id) = last_id {
                headers.extend_from_slice(format!("last-event-id: {id}\r\n").as_bytes());
            }
            request.write(None, &headers, &mut head);
            if conn.socket.write_all(&head).await.is_err() {
                self.failed().await;
                continue;
            }
            match conn.head().await {
                Ok((200, _)) => {}
                _ => {
                    self.failed().await;
                    continue;
                }
            }
            while let Ok(Some(revision)) = conn.next_event_id().await {
                last_id = Some(revision);
                self.board.changed(self.id, revision);
                self.permit = None;
            }
            self.failed().await;
        }
    }

    async fn failed(&mut self) {
        self.board.failures.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A snapshot at this revision.
    Change(u64),
    /// The wait ran out; current at this revision.
    Unchanged(u64),
}

/// `Change` for a snapshot, `Unchanged` for a wait that ran out; both carry the `id:`.
fn parse_poll_answer(body: &[u8]) -> Option<Answer> {
    let mut id = None;
    let mut snapshot = false;
    for line in body.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"id: ") {
            id = std::str::from_utf8(value).ok()?.trim().parse::<u64>().ok();
        } else if line == b"event: snapshot" {
            snapshot = true;
        } else if line.starts_with(b"data: ") {
            // The snapshot's JSON; the id and event lines come before it.
            break;
        }
    }
    let id = id?;
    Some(if snapshot {
        Answer::Change(id)
    } else {
        Answer::Unchanged(id)
    })
}

/// An HTTP/1.1 client connection: responses with `Content-Length`, or a chunked event stream,
/// parsed in place in one buffer.
struct Connection {
    socket: TcpStream,
    buffer: Vec<u8>,
    /// Bytes before this were consumed.
    start: usize,
}

impl Connection {
    fn new(socket: TcpStream) -> Connection {
        Connection {
            socket,
            buffer: Vec::with_capacity(4096),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.pending().len() > MAX_RESPONSE {
            return Err(std::io::Error::other("response too large"));
        }
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.reserve(16 * 1024);
        if self.socket.read_buf(&mut self.buffer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The status and the `Content-Length` of the next response head.
    async fn head(&mut self) -> std::io::Result<(u16, Option<usize>)> {
        let end = loop {
            if let Some(at) = find(self.pending(), b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let parsed = response_head(&self.pending()[..end]);
        self.consume(end + 4);
        parsed.ok_or_else(|| std::io::Error::other("bad response head"))
    }

    /// The answer to a poll; `None` when it is not a 200 with an `id:`.
    async fn poll_answer(&mut self) -> std::io::Result<Option<Answer>> {
        let (status, length) = self.head().await?;
        let length = length.ok_or_else(|| std::io::Error::other("no content-length"))?;
        if length > MAX_RESPONSE {
            return Err(std::io::Error::other("response too large"));
        }
        while self.pending().len() < length {
            self.fill().await?;
        }
        let answer = if status == 200 {
            parse_poll_answer(&self.pending()[..length])
        } else {
            None
        };
        self.consume(length);
        Ok(answer)
    }

    /// The `id:` of the next complete event of a stream; `None` at its end.
    async fn next_event_id(&mut self) -> std::io::Result<Option<u64>> {
        let mut id = None;
        loop {
            while let Some(end) = self.pending().iter().position(|&b| b == b'\n') {
                let line = &self.pending()[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // Chunk-size lines have no field name and are skipped: each event is one
                // chunk, so they never split one.
                let complete = line.is_empty() && id.is_some();
                if let Some(value) = line.strip_prefix(b"id: ") {
                    id = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                }
                self.consume(end + 1);
                if complete {
                    return Ok(id);
                }
            }
            match self.fill().await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers_are_told_apart() {
        assert_eq!(
            parse_poll_answer(b"id: 7\nevent: snapshot\ndata: {}\n\n"),
            Some(Answer::Change(7))
        );
        assert_eq!(
            parse_poll_answer(b": timeout\nid: 9\n\n"),
            Some(Answer::Unchanged(9))
        );
        assert_eq!(parse_poll_answer(b"{\"error\":\"x\"}"), None);
    }

    #[test]
    fn sidecars_ask_what_the_plugin_asks() {
        let workload = workload(12, 10);
        let filter = Filter::for_workload(&workload, true);
        assert_eq!(filter.namespace.as_deref(), Some("ns2"));
        assert_eq!(filter.service.as_deref(), Some("svc12-v1"));
        assert_eq!(filter.labels.as_ref().unwrap()["app"], "svc12");
        let addr = SocketAddr::from(([127, 0, 0, 1], 8081));
        let transport = Transport::Poll {
            wait_ms: 30_000,
            repoll_spread_ms: 0,
        };
        let request = PollRequest::new(filter.clone(), transport, addr);
        let report = identity_header(7, &workload);
        let report_text = String::from_utf8(report.clone()).unwrap();
        let value = report_text
            .strip_prefix("x-boifi-sidecar: ")
            .unwrap()
            .trim_end();
        let identity = SidecarIdentity::parse_header(value.as_bytes()).unwrap();
        assert_eq!(
            (identity.pod.as_str(), identity.workload.as_str()),
            ("svc12-v1-7", "svc12-v1")
        );
        let mut query = StreamQuery {
            filter,
            mode: Mode::Poll,
            wait_ms: Some(30_000),
            revision: None,
            last_event_id: None,
        };
        let expected = |query: &StreamQuery| {
            format!(
                "GET /v1/config/stream?{} HTTP/1.1\r\nhost: 127.0.0.1:8081\r\naccept: text/event-stream\r\n{report_text}\r\n",
                query.encode()
            )
        };
        let mut head = Vec::new();
        request.write(None, &report, &mut head);
        assert_eq!(String::from_utf8(head.clone()).unwrap(), expected(&query));
        query.revision = Some(1234);
        request.write(Some(1234), &report, &mut head);
        assert_eq!(String::from_utf8(head).unwrap(), expected(&query));
    }
}
