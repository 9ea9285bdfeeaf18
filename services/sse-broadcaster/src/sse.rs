//! Server-Sent Events frames as shared buffers. The framing itself is the contract's
//! (`boifi_policy::wire::sse`); here every frame is built once and shared (`Bytes` clones are
//! reference counts), so fan-out to many clients costs no serialization per client.

use actix_web::web::Bytes;
use boifi_policy::wire::{self, EventKind, ResyncData};

/// `id: <id>\nevent: <event>\ndata: <data>\n\n`; `data` is compact JSON.
pub(crate) fn event(id: u64, kind: EventKind, data: &[u8]) -> Bytes {
    Bytes::from(wire::sse::event(id, kind.name(), data))
}

/// `data` serialized as compact JSON, in an event.
pub(crate) fn json_event(id: u64, kind: EventKind, data: &impl serde::Serialize) -> Bytes {
    match serde_json::to_vec(data) {
        Ok(json) => event(id, kind, &json),
        // Unreachable for the event data types (no maps with non-string keys, no floats).
        Err(err) => {
            log::error!("cannot serialize {} event data: {err}", kind.name());
            event(id, kind, b"{}")
        }
    }
}

/// A comment line; clients ignore it, proxies see traffic.
pub(crate) fn comment(text: &'static str) -> Bytes {
    Bytes::from(wire::sse::comment(text))
}

/// Reconnection delay advice for `EventSource` clients.
pub(crate) fn retry(ms: u64) -> Bytes {
    Bytes::from(wire::sse::retry(ms))
}

/// A comment plus an `id:` field and no data: sets the client's last event id without
/// dispatching an event.
pub(crate) fn id_only(comment: &'static str, id: u64) -> Bytes {
    Bytes::from(wire::sse::id_only(comment, id))
}

/// Tells a client it fell behind and must reconnect. It carries no `id:`, so the client
/// resumes from the last event it did receive.
pub(crate) fn resync() -> Bytes {
    let data = ResyncData {
        reason: ResyncData::LAGGED.to_owned(),
    };
    let json = serde_json::to_vec(&data).unwrap_or_default();
    Bytes::from(wire::sse::event_without_id(EventKind::Resync.name(), &json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_event_stream_format() {
        assert_eq!(
            &event(7, EventKind::Halt, br#"{"halted":true}"#)[..],
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
