//! Server-Sent Events framing. Every frame is built once and shared (`Bytes` clones are
//! reference counts), so fan-out to many clients costs no serialization per client.

use actix_web::web::Bytes;

/// `id: <id>\nevent: <event>\ndata: <data>\n\n`. `data` is compact JSON, which never holds a
/// raw newline, so one `data:` line carries it.
pub(crate) fn event(id: u64, event: &str, data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + event.len() + 40);
    frame.extend_from_slice(format!("id: {id}\nevent: {event}\ndata: ").as_bytes());
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// A comment line; clients ignore it, proxies see traffic.
pub(crate) fn comment(text: &'static str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// Reconnection delay advice for `EventSource` clients.
pub(crate) fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// A comment plus an `id:` field and no data: sets the client's last event id without
/// dispatching an event.
pub(crate) fn id_only(comment: &'static str, id: u64) -> Bytes {
    Bytes::from(format!(": {comment}\nid: {id}\n\n"))
}

/// Tells a client it fell behind and must reconnect. It carries no `id:`, so the client
/// resumes from the last event it did receive.
pub(crate) fn resync() -> Bytes {
    Bytes::from_static(b"event: resync\ndata: {\"reason\":\"lagged\"}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_event_stream_format() {
        assert_eq!(
            &event(7, "halt", br#"{"halted":true}"#)[..],
            b"id: 7\nevent: halt\ndata: {\"halted\":true}\n\n"
        );
        assert_eq!(&comment("ping")[..], b": ping\n\n");
        assert_eq!(&retry(3000)[..], b"retry: 3000\n\n");
        assert_eq!(&id_only("timeout", 9)[..], b": timeout\nid: 9\n\n");
        assert_eq!(
            &resync()[..],
            b"event: resync\ndata: {\"reason\":\"lagged\"}\n\n"
        );
    }
}
