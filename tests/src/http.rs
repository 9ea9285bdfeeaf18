//! Blocking HTTP/1.1 clients for tests, reading straight off the socket with a deadline on
//! every read and a bound on what they read:
//!
//! - [`http_request`]: one request on a fresh connection, the whole response ([`HttpResponse`]);
//! - [`KeepAliveClient`]: requests over one kept-alive connection, as a service's pool would;
//! - [`request`] / [`Response`]: the head first, then the body on demand, line by line or as
//!   Server-Sent Events [`Block`]s (streams never end by themselves);
//! - [`call`]: a request with an optional JSON body; status and body text;
//! - [`ready`]: the services' readiness probe.
//!
//! Hand-written rather than a client crate: the tests look at framing, held connections and
//! partial streams that a full client hides.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest line or chunk accepted from the server under test.
const MAX_LINE: usize = 4 * 1024 * 1024;
/// Largest body read whole ([`http_request`], [`call`], [`Response::body_to_end`]).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A whole response, read by [`http_request`] or a [`KeepAliveClient`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), the whole response read
/// within `timeout`. Handles `Content-Length`, chunked and read-until-close bodies.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let mut all_headers = vec![("Connection", "close")];
    all_headers.extend_from_slice(headers);
    let response = request(addr, method, path, &all_headers, body, deadline)?;
    Ok(response.finish(deadline)?.0)
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

/// A request with an optional JSON body on a fresh connection; the status and the whole body.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    deadline: Instant,
) -> io::Result<(u16, String)> {
    let mut headers = vec![("Connection", "close")];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let mut response = request(
        addr,
        method,
        path,
        &headers,
        body.map(str::as_bytes),
        deadline,
    )?;
    let text = response.body_to_end(deadline)?;
    Ok((response.status, text))
}

/// Sends `method path` with `headers` (and `Content-Length` when there is a body) on a fresh
/// connection; returns the response once its head has arrived.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    deadline: Instant,
) -> io::Result<Response> {
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    arm_write(&stream, deadline)?;
    write_request(&stream, addr, method, path, headers, body)?;
    Response::read_head(BufReader::new(stream), method, deadline)
}

fn write_request(
    mut stream: &TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("deadline passed while {what}"),
    )
}

fn time_left(deadline: Instant, what: &str) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(what));
    }
    Ok(left)
}

/// Makes the next read fail once `deadline` has passed.
fn arm(stream: &TcpStream, deadline: Instant, what: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(time_left(deadline, what)?))
}

fn arm_write(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    stream.set_write_timeout(Some(time_left(deadline, "sending the request")?))
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

/// An HTTP response being read: the head is parsed, the body is read on demand.
pub struct Response {
    reader: BufReader<TcpStream>,
    framing: Framing,
    pub status: u16,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    body: VecDeque<u8>,
    eof: bool,
}

impl Response {
    /// Reads the status line and headers of the response to a `method` request.
    fn read_head(
        reader: BufReader<TcpStream>,
        method: &str,
        deadline: Instant,
    ) -> io::Result<Response> {
        let mut response = Response {
            reader,
            framing: Framing::UntilClose,
            status: 0,
            headers: Vec::new(),
            body: VecDeque::new(),
            eof: false,
        };
        let status_line = response.raw_line(deadline, "reading the status line")?;
        response.status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        loop {
            let line = response.raw_line(deadline, "reading headers")?;
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                response
                    .headers
                    .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let status = response.status;
        response.framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Length(0)
        } else if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            Framing::Chunked
        } else if let Some(length) = response.header("content-length") {
            Framing::Length(length.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("content-length {length:?}"),
                )
            })?)
        } else {
            Framing::UntilClose
        };
        Ok(response)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The whole response, and the connection when it can carry another request.
    fn finish(mut self, deadline: Instant) -> io::Result<(HttpResponse, Option<TcpStream>)> {
        self.read_to_end(deadline)?;
        let reusable = !matches!(self.framing, Framing::UntilClose)
            && !self
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            && self.reader.buffer().is_empty();
        let whole = HttpResponse {
            status: self.status,
            body: self.body.drain(..).collect(),
            headers: std::mem::take(&mut self.headers),
        };
        Ok((whole, reusable.then(|| self.reader.into_inner())))
    }

    /// One CRLF- or LF-terminated line of the raw connection (head, chunk sizes).
    fn raw_line(&mut self, deadline: Instant, what: &str) -> io::Result<String> {
        arm(self.reader.get_ref(), deadline, what)?;
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed while {what}"),
            ));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Reads more of the body; false at its end.
    fn fill(&mut self, deadline: Instant) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        match &mut self.framing {
            Framing::Chunked => {
                let size_line = self.raw_line(deadline, "reading a chunk size")?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("chunk size {size_line:?}: {e}"),
                            )
                        })?;
                if size == 0 {
                    // The empty line after the last chunk (no trailers are sent to us).
                    self.raw_line(deadline, "reading the end of the body")?;
                    self.eof = true;
                    return Ok(false);
                }
                if size > MAX_LINE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "chunk too large",
                    ));
                }
                let mut chunk = vec![0; size];
                arm(self.reader.get_ref(), deadline, "reading a chunk")?;
                self.reader.read_exact(&mut chunk)?;
                self.raw_line(deadline, "reading a chunk end")?;
                self.body.extend(chunk);
            }
            Framing::Length(left) => {
                if *left == 0 {
                    self.eof = true;
                    return Ok(false);
                }
                let mut buf = vec![0; (*left).min(64 * 1024)];
                arm(self.reader.get_ref(), deadline, "reading the body")?;
                let read = self.reader.read(&mut buf)?;
                if read == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
                if let Framing::Length(left) = &mut self.framing {
                    *left -= read;
                }
                self.body.extend(&buf[..read]);
            }
            Framing::UntilClose => {
                let mut buf = vec![0; 64 * 1024];
                arm(self.reader.get_ref(), deadline, "reading the body")?;
                let read = self.reader.read(&mut buf)?;
                if read == 0 {
                    self.eof = true;
                    return Ok(false);
                }
                self.body.extend(&buf[..read]);
            }
        }
        Ok(true)
    }

    /// Reads the rest of the body into the buffer, at most [`MAX_BODY`] bytes.
    fn read_to_end(&mut self, deadline: Instant) -> io::Result<()> {
        while self.fill(deadline)? {
            if self.body.len() > MAX_BODY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("body over {MAX_BODY} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// The next body line without its line end; `None` at the end of the body.
    pub fn body_line(&mut self, deadline: Instant) -> io::Result<Option<String>> {
        loop {
            if let Some(end) = self.body.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.body.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// The rest of the body as text (at most [`MAX_BODY`] bytes).
    pub fn body_to_end(&mut self, deadline: Instant) -> io::Result<String> {
        self.read_to_end(deadline)?;
        let bytes: Vec<u8> = self.body.drain(..).collect();
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The next event-stream block (fields up to a blank line); `None` at the end of the body.
    pub fn next_block(&mut self, deadline: Instant) -> io::Result<Option<Block>> {
        let mut block = Block::default();
        let mut any = false;
        while let Some(line) = self.body_line(deadline)? {
            if line.is_empty() {
                if any {
                    return Ok(Some(block));
                }
                continue;
            }
            any = true;
            if let Some(comment) = line.strip_prefix(':') {
                block.comments.push(comment.trim().to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => block.id = Some(value),
                "event" => block.event = Some(value),
                "data" => block.data = Some(value),
                "retry" => block.retry = value.parse().ok(),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The next block that is an event (has `event:`), skipping comments and `retry:`.
    pub fn next_event(&mut self, deadline: Instant) -> io::Result<Option<Block>> {
        while let Some(block) = self.next_block(deadline)? {
            if block.event.is_some() {
                return Ok(Some(block));
            }
        }
        Ok(None)
    }
}

/// One block of an event stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<u64>,
    pub comments: Vec<String>,
}

impl Block {
    /// The `id:` as a revision. Panics (a test failure) when there is none.
    pub fn revision(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("block without a numeric id: {self:?}"))
    }

    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }

    /// The `data:` as JSON. Panics (a test failure) when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("data of {self:?} is not JSON: {e}"))
    }

    /// `(event, revision, policy name or halt flag)`, for compact assertions.
    pub fn summary(&self) -> (String, u64, String) {
        let data = self.json();
        let what = match self.name() {
            "policy" => data["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
            "delete" => data["name"].as_str().unwrap_or("?").to_owned(),
            "halt" => data["halted"].to_string(),
            _ => String::new(),
        };
        (self.name().to_owned(), self.revision(), what)
    }
}

/// An HTTP/1.1 client that keeps its connection open between requests, as a service's
/// connection pool would (and so that thousands of test requests do not cost thousands of
/// handshakes). Reconnects when the server closed the connection.
#[derive(Debug)]
pub struct KeepAliveClient {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<TcpStream>,
}

impl KeepAliveClient {
    /// No connection is made until the first request. `timeout` bounds each request.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        KeepAliveClient {
            addr,
            timeout,
            conn: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request, on the open connection when there is one. A request that fails on
    /// a reused connection before any response byte (the server closed it while idle) is sent
    /// once more on a fresh connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<HttpResponse> {
        if let Some(conn) = self.conn.take() {
            match self.send(conn, method, path, headers, body) {
                Err(e) if is_stale_connection(&e) => {}
                result => return result,
            }
        }
        let conn = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        conn.set_nodelay(true)?;
        self.send(conn, method, path, headers, body)
    }

    /// One request on `conn`, which is kept for the next one when the response allows it.
    fn send(
        &mut self,
        conn: TcpStream,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<HttpResponse> {
        let deadline = Instant::now() + self.timeout;
        arm_write(&conn, deadline)?;
        write_request(&conn, self.addr, method, path, headers, body)?;
        let (response, conn) =
            Response::read_head(BufReader::new(conn), method, deadline)?.finish(deadline)?;
        self.conn = conn;
        Ok(response)
    }
}

/// Errors that mean "the idle connection was gone", after which a retry is safe.
fn is_stale_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
