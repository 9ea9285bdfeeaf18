//! Raw HTTP/1.1 on a socket, for responses read a piece at a time: the head first, then the
//! body line by line or as Server-Sent Events [`Block`]s, each read bounded by a deadline the
//! caller chooses per read.
//!
//! Why not ureq: its timeouts are fixed when a request is sent, while stream tests wait for
//! "the next event within N seconds" again and again on one open response; and the tests look
//! at what a full client hides: a stream that never ends, a client that stops reading (the
//! broadcaster must drop it), the exact bytes of a long poll. One-shot calls go through ureq
//! (the parent module).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest line or chunk accepted from the server under test.
const MAX_LINE: usize = 4 * 1024 * 1024;
/// Largest body read whole ([`Response::body_to_end`]).
const MAX_BODY: usize = 4 * 1024 * 1024;

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
    let mut stream = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(time_left(deadline, "sending the request")?))?;
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
    stream.write_all(&bytes)?;
    Response::read_head(BufReader::new(stream), method, deadline)
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
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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

    /// Reads the rest of the body into the buffer, at most `MAX_BODY` bytes.
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

    /// The rest of the body as text (at most 4 MiB).
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
