//! Server-Sent Events framing (<https://html.spec.whatwg.org/multipage/server-sent-events.html>):
//! the frames the broadcaster writes, and the reader a client with a complete body uses.
//!
//! Every `data` the broadcaster sends is compact JSON, which never holds a raw newline, so one
//! `data:` line carries it.

/// `id: <id>\nevent: <event>\ndata: <data>\n\n`.
pub fn event(id: u64, event: &str, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(data.len() + event.len() + 40);
    frame.extend_from_slice(format!("id: {id}\nevent: {event}\ndata: ").as_bytes());
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\n\n");
    frame
}

/// An event without `id:` (the client's last event id stays as it was).
pub fn event_without_id(event: &str, data: &[u8]) -> Vec<u8> {
    let mut frame = format!("event: {event}\ndata: ").into_bytes();
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\n\n");
    frame
}

/// A comment line; clients ignore it, proxies see traffic.
pub fn comment(text: &str) -> Vec<u8> {
    format!(": {text}\n\n").into_bytes()
}

/// Reconnection delay advice for `EventSource` clients.
pub fn retry(ms: u64) -> Vec<u8> {
    format!("retry: {ms}\n\n").into_bytes()
}

/// A comment plus an `id:` field and no data: sets the client's last event id without
/// dispatching an event (the long poll's timeout answer).
pub fn id_only(comment: &str, id: u64) -> Vec<u8> {
    format!(": {comment}\nid: {id}\n\n").into_bytes()
}

/// The data of the last `event` event in a complete SSE body. Comments, `id:`, `retry:` and
/// other event types are skipped; multi-line data is joined with `\n` as the SSE spec says.
/// Lines end at `\n` or `\r\n`, as [`str::lines`] has them.
pub fn last_event_data(body: &str, event: &str) -> Option<String> {
    let mut found = None;
    let mut kind = "";
    let mut data: Option<String> = None;
    let mut rest = Some(body);
    // A body cut without a final blank line still ends its last event: the response is
    // complete. (Byte searches, not `lines()`: the plugin's code size counts.)
    while let Some(text) = rest {
        let line = match find(text, b'\n') {
            Some(end) => {
                rest = Some(&text[end + 1..]);
                let line = &text[..end];
                line.strip_suffix("\r").unwrap_or(line)
            }
            None => {
                rest = None;
                text
            }
        };
        if line.is_empty() {
            if kind == event {
                if let Some(d) = data.take() {
                    found = Some(d);
                }
            }
            kind = "";
            data = None;
            continue;
        }
        let (field, value) = match find(line, b':') {
            // A comment.
            Some(0) => continue,
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "event" => kind = value,
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    if kind == event {
        found = data.or(found);
    }
    found
}

/// Index of the first `byte` (ASCII) in `text`.
fn find(text: &str, byte: u8) -> Option<usize> {
    text.bytes().position(|b| b == byte)
}
