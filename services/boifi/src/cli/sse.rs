//! Reading a Server-Sent Events stream as it arrives
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>): fields collected line by
//! line, an event dispatched at each blank line, the last event id and the `retry:` advice
//! kept. Lines are bounded, so a peer that never sends a newline cannot exhaust memory.

use std::io::{self, BufRead, Read};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:`, `message` when absent.
    pub kind: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id when this event was dispatched (`id:` of this or an earlier event).
    pub id: Option<String>,
}

pub struct EventReader<R> {
    input: R,
    max_line: u64,
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

impl<R: BufRead> EventReader<R> {
    /// Reads events from `input`; a line longer than `max_line` bytes is an error.
    pub fn new(input: R, max_line: u64) -> Self {
        EventReader {
            input,
            max_line,
            last_id: None,
            retry_ms: None,
        }
    }

    /// The id of the last event seen (what to send back as `Last-Event-ID`).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The latest `retry:` advice, in ms.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// The next event; `None` when the stream ended (an event cut off by the end is dropped,
    /// as the spec says).
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        let mut kind = String::new();
        let mut data: Option<String> = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.input)
                .take(self.max_line + 1)
                .read_until(b'\n', &mut line)?;
            if read == 0 {
                return Ok(None);
            }
            if line.last() != Some(&b'\n') {
                if line.len() as u64 > self.max_line {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("an event line is longer than {} bytes", self.max_line),
                    ));
                }
                // The stream ended in the middle of a line.
                return Ok(None);
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let text = String::from_utf8_lossy(&line);
            if text.is_empty() {
                match data.take() {
                    Some(data) => {
                        let kind = match kind.is_empty() {
                            true => "message".to_owned(),
                            false => std::mem::take(&mut kind),
                        };
                        return Ok(Some(Event {
                            kind,
                            data,
                            id: self.last_id.clone(),
                        }));
                    }
                    None => {
                        kind.clear();
                        continue;
                    }
                }
            }
            let (field, value) = match text.find(':') {
                Some(0) => continue, // a comment (`: ping`)
                Some(at) => {
                    let value = &text[at + 1..];
                    (&text[..at], value.strip_prefix(' ').unwrap_or(value))
                }
                None => (&*text, ""),
            };
            match field {
                "event" => kind = value.to_owned(),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        self.retry_ms = Some(ms);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> (Vec<Event>, EventReader<&[u8]>) {
        let mut reader = EventReader::new(text.as_bytes(), 1024);
        let mut out = Vec::new();
        while let Some(event) = reader.next_event().expect("read") {
            out.push(event);
        }
        (out, reader)
    }

    #[test]
    fn events_ids_comments_and_retry() {
        let text = "retry: 3000\n\nid: 41\nevent: snapshot\ndata: {\"revision\":41}\n\n: ping\n\n\
                    id: 42\r\nevent: halt\r\ndata: {\"halted\":true}\r\n\r\n\
                    data: a\ndata:b\n\n";
        let (events, reader) = read_all(text);
        assert_eq!(
            events,
            [
                Event {
                    kind: "snapshot".into(),
                    data: "{\"revision\":41}".into(),
                    id: Some("41".into())
                },
                Event {
                    kind: "halt".into(),
                    data: "{\"halted\":true}".into(),
                    id: Some("42".into())
                },
                Event {
                    kind: "message".into(),
                    data: "a\nb".into(),
                    id: Some("42".into())
                },
            ]
        );
        assert_eq!(reader.retry_ms(), Some(3000));
        assert_eq!(reader.last_id(), Some("42"));
    }

    #[test]
    fn an_id_without_data_moves_the_last_id_only() {
        let (events, reader) = read_all(": timeout\nid: 57\n\n");
        assert!(events.is_empty());
        assert_eq!(reader.last_id(), Some("57"));
    }

    #[test]
    fn an_event_cut_off_by_the_end_is_dropped() {
        let (events, _) = read_all("id: 1\nevent: policy\ndata: {}\n");
        assert!(events.is_empty());
        let (events, _) = read_all("id: 1\nevent: policy\ndata: {}");
        assert!(events.is_empty());
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let long = format!("data: {}\n\n", "x".repeat(2000));
        let mut reader = EventReader::new(long.as_bytes(), 1024);
        let err = reader.next_event().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
