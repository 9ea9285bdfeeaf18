//! Blocking HTTP clients for tests.
//!
//! - [`http_request`]: one request on a fresh connection, the whole response ([`HttpResponse`]);
//! - [`KeepAliveClient`]: requests to one address over a kept-alive connection, as a service's
//!   pool would (thousands of test requests do not cost thousands of handshakes);
//! - [`call`]: a request with an optional JSON body before a deadline; status and body text;
//! - [`ready`]: the services' readiness probe;
//! - [`agent`]: a ureq agent with the rules below, for tests that use ureq's own API;
//! - [`request`] / [`Response`] / [`Block`] ([`stream`]): raw sockets, for responses read a
//!   piece at a time (event streams, long polls, clients that stop reading).
//!
//! Everything but [`stream`] is ureq with the same rules: a 4xx or 5xx is a response to look
//! at, not an error; redirects are returned, never followed; no proxy from the environment
//! (everything is on loopback); a timeout on every call; bodies up to 16 MiB.

pub mod stream;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use stream::{request, Block, Response};

/// Largest body read whole: a full page of `GET /v1/sidecars` (10,000 sidecars) is about 5 MB.
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// A whole response, read by [`http_request`], [`KeepAliveClient`] or [`call`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The rules every client here follows (see the module doc), with `timeout` for the whole
/// call: connecting, sending and reading the body.
fn config(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
}

/// A ureq agent with this module's rules and `timeout` per call; it pools connections.
pub fn agent(timeout: Duration) -> ureq::Agent {
    config(timeout).build().into()
}

/// One HTTP/1.1 request on a fresh connection, the whole response read within `timeout`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let one_shot: ureq::Agent = config(timeout).max_idle_connections(0).build().into();
    send(&one_shot, addr, method, path, headers, body)
}

/// Ok when a BOIFI service at `addr` answers `GET /v1/ready` with 200 (within 2 s); else what
/// it answered. A readiness probe for [`Process::wait_ready`](crate::process::Process::wait_ready).
pub fn ready(addr: SocketAddr) -> Result<(), String> {
    match http_request(addr, "GET", "/v1/ready", &[], None, Duration::from_secs(2)) {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("/v1/ready: {} {}", r.status, r.body_text())),
        Err(e) => Err(format!("/v1/ready: {e}")),
    }
}

/// A request with an optional JSON body on a fresh connection, answered before `deadline`;
/// the status and the whole body as text.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    deadline: Instant,
) -> io::Result<(u16, String)> {
    // A deadline already passed is a zero timeout, which ureq reports as a timeout.
    let left = deadline.saturating_duration_since(Instant::now());
    let headers: &[(&str, &str)] = match body {
        Some(_) => &[("content-type", "application/json")],
        None => &[],
    };
    let response = http_request(addr, method, path, headers, body.map(str::as_bytes), left)?;
    let text = String::from_utf8(response.body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((response.status, text))
}

/// Requests to one address over a kept-alive connection (ureq's pool), reconnecting when the
/// server closed it. Each request is bounded by the timeout given to [`new`](Self::new).
#[derive(Debug, Clone)]
pub struct KeepAliveClient {
    addr: SocketAddr,
    agent: ureq::Agent,
}

impl KeepAliveClient {
    /// No connection is made until the first request. `timeout` bounds each request.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        KeepAliveClient {
            addr,
            agent: agent(timeout),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request, on the pooled connection when there is one.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<HttpResponse> {
        send(&self.agent, self.addr, method, path, headers, body)
    }
}

/// One request through `agent`; the whole response.
fn send(
    agent: &ureq::Agent,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<HttpResponse> {
    let url = format!("http://{addr}{path}");
    let what = format!("{method} {url}");
    let mut builder = ureq::http::Request::builder().method(method).uri(&url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(body) => builder.body(body).map(|r| agent.run(r)),
        None => builder.body(()).map(|r| agent.run(r)),
    };
    let mut response = result
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}")))?
        .map_err(|e| io_error(e, &what))?;
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| io_error(e, &what))?;
    Ok(HttpResponse {
        status: response.status().as_u16(),
        headers,
        body,
    })
}

/// ureq's error as an `io::Error` of the right kind (timeouts stay `TimedOut`), with the request
/// in the message.
fn io_error(e: ureq::Error, what: &str) -> io::Error {
    let kind = match &e {
        ureq::Error::Io(e) => e.kind(),
        ureq::Error::Timeout(_) => io::ErrorKind::TimedOut,
        ureq::Error::ConnectionFailed => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener};

    /// A server that answers each connection once with `response`, after reading the request.
    fn answer_with(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(response.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn errors_and_redirects_are_responses() {
        let addr = answer_with(
            "HTTP/1.1 503 Service Unavailable\r\nx-a: 1\r\ncontent-length: 4\r\n\r\nbusy",
        );
        let r = http_request(addr, "GET", "/", &[], None, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (r.status, r.header("X-A"), r.body_text().as_str()),
            (503, Some("1"), "busy")
        );

        let addr =
            answer_with("HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n");
        let r = http_request(addr, "GET", "/", &[], None, Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.header("location")), (302, Some("/elsewhere")));
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let start = Instant::now();
        let err =
            http_request(addr, "GET", "/", &[], None, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let err = call(addr, "GET", "/", None, Instant::now()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(listener);
    }
}
