//! `bench-socket-floor`: what answering N held HTTP/1.1 requests costs this machine at the
//! least, whatever serves them. A benchmark, not a test: it prints numbers for
//! `docs/benchmarks.md`, next to `bench-fanout`'s, to tell the broadcaster's own cost from the
//! machine's.
//!
//! A minimal server (a child process of this binary: tokio, one task per connection, a
//! pre-encoded answer of `--answer-bytes`, no parsing beyond finding the end of the request
//! head) holds one request per connection; on each change it answers all of them, and each
//! client sends its next request at once, as the plugin does. The clients are this process,
//! on the same runtime shape as `bench-fanout`'s load generator. Both use the machine's cores
//! (tokio's default worker count), like the broadcaster and the load generator do.
//!
//! Reported per change: time from the trigger until each client has its answer (p50 / p99 /
//! max), and the CPU both processes used per client.
//!
//! `cargo build --release --bin bench-socket-floor && target/release/bench-socket-floor`

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_tests::bench::{find, median, quantile, response_head, whole_number};
use boifi_tests::process::cpu_time;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long one change may take to reach every client before the run is declared broken.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head the server reads.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Parser)]
#[command(name = "bench-socket-floor")]
struct Args {
    /// Held requests (clients).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = whole_number(1, 19_000))]
    clients: usize,
    /// Changes to measure.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = whole_number(1, 1000))]
    changes: usize,
    /// Size of each answer, head and body (a poll answer with a few policies is about 1 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = 1024, value_parser = whole_number(128, 1 << 20))]
    answer_bytes: usize,
    /// Internal: run as the server.
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.serve {
        serve(args.answer_bytes)
    } else {
        measure(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-socket-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The server: prints its address, then answers every held request once per line on stdin.
fn serve(answer_bytes: usize) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{addr}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let answer: Arc<[u8]> = answer(answer_bytes).into();
        let (changes, _) = watch::channel(0u64);
        let changes = Arc::new(changes);
        let held = Arc::new(AtomicU64::new(0));
        let trigger = changes.clone();
        let counted = held.clone();
        std::thread::spawn(move || {
            // `change` answers every held request; `held` prints how many are held. The end of
            // stdin (the parent exited) stops the server.
            for line in std::io::stdin().lock().lines() {
                match line.as_deref() {
                    Ok("change") => trigger.send_modify(|generation| *generation += 1),
                    Ok(_) => println!("{}", counted.load(Ordering::Acquire)),
                    Err(_) => break,
                }
            }
            std::process::exit(0);
        });
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            let changes = changes.subscribe();
            tokio::spawn(hold_and_answer(socket, answer, changes, held.clone()));
        }
    })
}

/// An answer of `bytes` in all: a head like the broadcaster's, padding as the body.
fn answer(bytes: usize) -> Vec<u8> {
    let head = |length: usize| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {length}\r\ncontent-type: text/event-stream\r\n\
             cache-control: no-cache\r\ncontent-encoding: identity\r\nx-accel-buffering: no\r\n\
             date: Thu, 26 Nov 2026 07:00:00 GMT\r\n\r\n"
        )
    };
    let length = bytes.saturating_sub(head(0).len() + 4).max(1);
    let mut out = head(length).into_bytes();
    out.resize(out.len() + length, b'x');
    out
}

/// One connection: read a request head, wait for the next change, answer, again.
async fn hold_and_answer(
    mut socket: TcpStream,
    answer: Arc<[u8]>,
    mut changes: watch::Receiver<u64>,
    held: Arc<AtomicU64>,
) {
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if buffer.len() > MAX_HEAD || socket.read_buf(&mut buffer).await.unwrap_or(0) == 0 {
                return;
            }
        };
        buffer.drain(..end);
        changes.borrow_and_update();
        held.fetch_add(1, Ordering::AcqRel);
        let changed = changes.changed().await;
        held.fetch_sub(1, Ordering::AcqRel);
        if changed.is_err() || socket.write_all(&answer).await.is_err() {
            return;
        }
    }
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
}

impl Server {
    fn start(answer_bytes: usize) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["--serve", "--answer-bytes", &answer_bytes.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .parse()
            .map_err(|_| format!("the server said {line:?}, not its address"))?;
        Ok(Server {
            child,
            stdin,
            stdout,
            addr,
        })
    }

    fn send(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("cannot reach the server: {e}"))
    }

    fn change(&mut self) -> Result<(), String> {
        self.send("change")
    }

    /// Waits until the server holds `count` requests.
    fn wait_held(&mut self, count: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.send("held")?;
            let mut line = String::new();
            self.stdout
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if line.trim().parse::<usize>().is_ok_and(|held| held >= count) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server holds {} of {count} requests",
                    line.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the clients share: answers per client, and when each got its last.
struct Board {
    answers: Vec<AtomicU64>,
    /// Nanoseconds since `epoch` of each client's last answer.
    answered_at: Vec<AtomicU64>,
    epoch: Instant,
}

async fn client(addr: SocketAddr, id: usize, board: Arc<Board>) -> std::io::Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let request = format!(
        "GET /v1/config/stream?mode=poll&wait_ms=60000&revision=1&namespace=ns&service=svc HTTP/1.1\r\n\
         host: broadcaster\r\naccept: text/event-stream\r\nx-boifi-sidecar: client-{id}\r\n\r\n"
    );
    let mut buffer = Vec::with_capacity(4096);
    loop {
        socket.write_all(request.as_bytes()).await?;
        // Head, then as many bytes as content-length says.
        let (end, length) = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                let (_, length) = response_head(&buffer[..at])
                    .ok_or_else(|| std::io::Error::other("bad response head"))?;
                break (at + 4, length.unwrap_or(0));
            }
            if socket.read_buf(&mut buffer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        while buffer.len() < end + length {
            if socket.read_buf(&mut buffer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        buffer.drain(..end + length);
        let nanos = u64::try_from(board.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        board.answered_at[id].store(nanos, Ordering::Relaxed);
        board.answers[id].fetch_add(1, Ordering::Release);
    }
}

fn measure(args: &Args) -> Result<(), String> {
    let mut server = Server::start(args.answer_bytes)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let board = Arc::new(Board {
        answers: (0..args.clients).map(|_| AtomicU64::new(0)).collect(),
        answered_at: (0..args.clients).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
    });
    for id in 0..args.clients {
        let board = board.clone();
        let addr = server.addr;
        runtime.spawn(async move {
            if let Err(e) = client(addr, id, board).await {
                eprintln!("client {id}: {e}");
            }
        });
    }
    // Change 0 warms up (not measured).
    let mut latencies = Vec::with_capacity(args.clients * args.changes);
    let (mut server_cpu, mut clients_cpu) = (Vec::new(), Vec::new());
    for change in 0..=args.changes {
        server.wait_held(args.clients, CHANGE_TIMEOUT)?;
        let before = (cpu(server.child.id())?, cpu(std::process::id())?);
        let start = board.epoch.elapsed();
        server.change()?;
        // Answers each client has had once this change reached it.
        let expected = change as u64 + 1;
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        while board
            .answers
            .iter()
            .any(|n| n.load(Ordering::Acquire) < expected)
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "change {change} did not reach every client in {CHANGE_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Every client's next request read and held: the server's CPU for it counts, as in
        // bench-fanout.
        server.wait_held(args.clients, CHANGE_TIMEOUT)?;
        let after = (cpu(server.child.id())?, cpu(std::process::id())?);
        if change == 0 {
            continue;
        }
        let mut this = Vec::with_capacity(args.clients);
        for at in &board.answered_at {
            let at = Duration::from_nanos(at.load(Ordering::Relaxed));
            this.push(at.saturating_sub(start));
        }
        println!(
            "change {change}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(quantile(&this, 0.5)),
            ms(quantile(&this, 0.99)),
            ms(quantile(&this, 1.0))
        );
        latencies.extend(this);
        let per_client = |cpu: Duration| cpu.as_secs_f64() / args.clients as f64 * 1e6;
        server_cpu.push(per_client(after.0 - before.0));
        clients_cpu.push(per_client(after.1 - before.1));
    }
    println!(
        "{} clients, {} changes, {}-byte answers: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         CPU per answered client (median): server {:.1} us, clients {:.1} us",
        args.clients,
        args.changes,
        args.answer_bytes,
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(quantile(&latencies, 1.0)),
        median(server_cpu),
        median(clients_cpu)
    );
    Ok(())
}

fn cpu(pid: u32) -> Result<Duration, String> {
    cpu_time(pid).ok_or_else(|| format!("cannot read the CPU time of {pid}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
