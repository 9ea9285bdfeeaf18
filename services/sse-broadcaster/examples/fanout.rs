//! Fan-out benchmark: opens many stream clients on loopback, makes one policy change through
//! policy-api, and reports how long until every client had it, plus the broadcaster's memory
//! per client.
//!
//! ```text
//! cargo run --release -p boifi-sse-broadcaster --example fanout -- 10000
//! ```
//!
//! The services (policy-api and the broadcaster on one embedded store, as `boifi serve` runs
//! them) run in a child process, so client and server sockets count against separate file
//! descriptor limits and the memory figure is the server's alone. Both processes raise their
//! soft `RLIMIT_NOFILE` to the hard limit.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_policy_api::{AppState, Auth};
use boifi_sse_broadcaster::{Broadcaster, Settings, SystemClock};
use boifi_store::{open_store, AuditRetention, StoreSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Connections opened at once; more would overflow the listen backlog.
const CONNECT_CONCURRENCY: usize = 256;
const DEADLINE: Duration = Duration::from_secs(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let nofile = rlimit::increase_nofile_limit(u64::MAX)?;
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--serve") => serve(),
        count => {
            let clients: usize = count.map_or(Ok(10_000), str::parse)?;
            bench(clients, nofile)
        }
    }
}

/// Child: both services on a fresh embedded store; prints `API_PORT STREAM_PORT`, runs until
/// its stdin closes (the parent exited).
fn serve() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    runtime.block_on(async {
        let store = open_store(&StoreSettings {
            etcd_endpoints: Vec::new(),
            etcd_prefix: String::new(),
            data_dir: dir.path().to_path_buf(),
            audit_retention: AuditRetention::default(),
        })
        .await?;
        let state = AppState::new(store.clone(), Auth::disabled())?;
        let settings = Settings {
            max_clients: 1_000_000,
            ..Settings::default()
        };
        let broadcaster = Broadcaster::start(store, Arc::new(SystemClock), settings)?;
        let api = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let stream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        println!(
            "{} {}",
            api.local_addr()?.port(),
            stream.local_addr()?.port()
        );
        std::io::stdout().flush()?;
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let _ = std::io::stdin().lines().count();
            })
            .await;
        };
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api = tokio::spawn(boifi_policy_api::server::run(api, state, async {
            let _ = api_stopped.await;
        }));
        boifi_sse_broadcaster::run(stream, broadcaster, stdin_closed).await?;
        let _ = stop_api.send(());
        api.await??;
        Ok(())
    })
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// Opens a stream, reports when its snapshot arrived, then returns when the first `policy`
/// event arrives.
async fn client(
    addr: SocketAddr,
    connected: Arc<AtomicUsize>,
    permit: OwnedSemaphorePermit,
) -> Result<Instant, BoxError> {
    let mut permit = Some(permit);
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /v1/config/stream?namespace=demo&service=reviews HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut seen = Vec::new();
    let mut buf = vec![0; 4096];
    let mut snapshot = false;
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Err("stream ended".into());
        }
        seen.extend_from_slice(&buf[..read]);
        if !snapshot && contains(&seen, b"event: snapshot") {
            snapshot = true;
            connected.fetch_add(1, Ordering::SeqCst);
            // The next connection may start.
            drop(permit.take());
            seen.clear();
        }
        if snapshot && contains(&seen, b"event: policy") {
            return Ok(Instant::now());
        }
        // Keep a tail long enough to find a marker split across reads.
        if seen.len() > 64 {
            seen.drain(..seen.len() - 64);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn bench(clients: usize, nofile: u64) -> Result<(), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ports = String::new();
    BufReader::new(child.stdout.take().ok_or("child stdout")?).read_line(&mut ports)?;
    let server = Server(child);
    let pid = server.0.id();
    let mut ports = ports.split_whitespace().map(str::parse::<u16>);
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.next().ok_or("api port")??));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.next().ok_or("stream port")??));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Let the broadcaster load its first snapshot before measuring.
        let ready_deadline = Instant::now() + DEADLINE;
        while http(addr, "GET", "/v1/ready", "").await.map_or(true, |s| s != 200) {
            if Instant::now() > ready_deadline {
                return Err::<(), BoxError>("broadcaster not ready".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rss_before = rss_kib(pid)?;
        let connected = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for _ in 0..clients {
            let connected = connected.clone();
            let permit = gate.clone().acquire_owned().await?;
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(DEADLINE, client(addr, connected, permit))
                    .await
                    .map_err(|_| BoxError::from("client timed out"))?
            }));
        }
        while connected.load(Ordering::SeqCst) < clients {
            if started.elapsed() > DEADLINE {
                return Err(format!(
                    "only {} of {clients} clients connected",
                    connected.load(Ordering::SeqCst)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_time = started.elapsed();
        let rss_after = rss_kib(pid)?;

        let policy = r#"{"metadata":{"name":"bench"},"spec":{"selector":{"namespace":"demo","service":"reviews"},"rules":[{"fault":{"abort":{"httpStatus":503}}}]}}"#;
        let t0 = Instant::now();
        let status = http(api, "POST", "/v1/policies", policy).await?;
        let write_time = t0.elapsed();
        if status != 201 {
            return Err(format!("POST /v1/policies: {status}").into());
        }
        let mut latencies = Vec::with_capacity(clients);
        for task in tasks {
            latencies.push(task.await?? - t0);
        }
        latencies.sort();
        let per_client = (rss_after.saturating_sub(rss_before)) as f64 / clients as f64;
        println!("clients:            {clients} (RLIMIT_NOFILE soft limit now {nofile})");
        println!("connect + snapshot: {connect_time:.2?} for all");
        println!("policy write (API): {write_time:.2?}");
        println!(
            "change delivered:   p50 {:.2?}  p99 {:.2?}  max {:.2?}  (from sending the write)",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            latencies[latencies.len() - 1]
        );
        println!(
            "broadcaster RSS:    {} KiB idle -> {} KiB with clients = {per_client:.1} KiB per client",
            rss_before, rss_after
        );
        Ok(())
    })?;
    drop(server);
    Ok(())
}

/// One request with `Connection: close`; returns the status code.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<u16, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.split_whitespace().nth(1).ok_or("no status")?.parse()?)
}
