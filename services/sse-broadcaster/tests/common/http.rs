//! A tiny blocking HTTP/1.1 client that reads Server-Sent Events straight off the socket, with
//! a deadline on every read (shared by the tests and the fan-out benchmark).

#![allow(dead_code)] // each test binary uses a different part

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest line or chunk accepted from the server under test.
const MAX_LINE: usize = 4 * 1024 * 1024;

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
    pub headers: Vec<(String, String)>,
    body: VecDeque<u8>,
    eof: bool,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("deadline passed while {what}"),
    )
}

fn arm(stream: &TcpStream, deadline: Instant, what: &str) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(what));
    }
    stream.set_read_timeout(Some(left))
}

/// Sends `method path` with optional extra header lines and a JSON body; returns the response
/// once its head has arrived.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
    deadline: Instant,
) -> io::Result<Response> {
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut writer = &stream;
    writer.write_all(head.as_bytes())?;
    if let Some(body) = body {
        writer.write_all(body.as_bytes())?;
    }
    let mut response = Response {
        reader: BufReader::new(stream),
        framing: Framing::UntilClose,
        status: 0,
        headers: Vec::new(),
        body: VecDeque::new(),
        eof: false,
    };
    let status_line = response.raw_line(deadline, "reading the status line")?;
    response.status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
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
    response.framing = if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        Framing::Chunked
    } else if let Some(length) = response.header("content-length") {
        Framing::Length(length.parse().map_err(io::Error::other)?)
    } else {
        Framing::UntilClose
    };
    Ok(response)
}

/// A blocking request with a JSON body; returns the status and the whole body.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    deadline: Instant,
) -> io::Result<(u16, String)> {
    let mut response = request(
        addr,
        method,
        path,
        &[("Connection", "close".to_owned())],
        body,
        deadline,
    )?;
    let text = response.body_to_end(deadline)?;
    Ok((response.status, text))
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
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
                what.to_owned(),
            ));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(io::Error::other)
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
                        .map_err(|e| io::Error::other(format!("chunk size {size_line:?}: {e}")))?;
                if size == 0 {
                    self.eof = true;
                    return Ok(false);
                }
                if size > MAX_LINE {
                    return Err(io::Error::other("chunk too large"));
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

    /// The next body line without its line end; `None` at the end of the body.
    pub fn body_line(&mut self, deadline: Instant) -> io::Result<Option<String>> {
        loop {
            if let Some(end) = self.body.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.body.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line).map(Some).map_err(io::Error::other);
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    pub fn body_to_end(&mut self, deadline: Instant) -> io::Result<String> {
        while self.fill(deadline)? {}
        let bytes: Vec<u8> = self.body.drain(..).collect();
        String::from_utf8(bytes).map_err(io::Error::other)
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
    pub fn revision(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("block without a numeric id: {self:?}"))
    }

    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }

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
