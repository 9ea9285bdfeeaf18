//! `GET /v1/config/stream`: a snapshot, then live changes, as Server-Sent Events; or, with
//! `mode=poll`, one complete response per change for clients that only see whole bodies (the
//! Wasm plugin). The wire format is specified in `docs/api-stream.md`.
//!
//! - Stream: `retry:`, then `event: snapshot` (or, on resume, only the missed events), then
//!   live `policy`/`delete`/`halt` events and `: ping` comments. A client that falls behind
//!   by more than its queue (`client_buffer` entries) gets `event: resync` and the stream ends.
//! - Poll: a `snapshot` at once when the client's `revision` is unknown or behind for its
//!   filter; otherwise the request is held until a change concerns it (then a `snapshot`) or the
//!   wait ends (then a comment with `id:` of the revision the client is now current at). A held
//!   poll is only its request future, registered with the hub by its filter and woken by the
//!   first change that concerns it: no task, no buffer, and no wake-up for other changes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use boifi_policy::wire::{self, FieldProblem, Filter, StreamQuery};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::error::RequestError;
use crate::hub::{ClientGuard, Hub, PollAnswer, PollCheck, StreamItem, Subscription};
use crate::metrics::{EventKind, Mode};
use crate::sidecars::SidecarTable;
use crate::sse;

/// The route.
pub(crate) const STREAM_PATH: &str = "/v1/config/stream";

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamRequest {
    Stream {
        filter: Filter,
        resume: Option<u64>,
    },
    Poll {
        filter: Filter,
        revision: Option<u64>,
        wait: Duration,
    },
}

/// Reads the query string (strictly: [`StreamQuery::parse`], the contract's parser) and the
/// `Last-Event-ID` header. The header wins over the query: an `EventSource` that was opened
/// with `?last_event_id=` sends the newer id in the header when it reconnects. A header that
/// is not a number is ignored (the client gets a snapshot).
pub(crate) fn parse_request(
    query: &str,
    last_event_id: Option<&[u8]>,
    settings: &Settings,
) -> Result<StreamRequest, Vec<FieldProblem>> {
    let query = StreamQuery::parse(query)?;
    let header = last_event_id
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let resume = header.or(query.resume());
    Ok(match query.mode {
        wire::Mode::Poll => {
            let wait = query
                .wait_ms
                .map_or(settings.poll_wait, Duration::from_millis);
            StreamRequest::Poll {
                filter: query.filter,
                revision: resume,
                wait: wait.min(settings.poll_max_wait),
            }
        }
        wire::Mode::Stream => StreamRequest::Stream {
            filter: query.filter,
            resume,
        },
    })
}

/// The route handler: parse, then stream or poll.
pub(crate) async fn config_stream(
    req: HttpRequest,
    hub: web::Data<Hub>,
    sidecars: web::Data<SidecarTable>,
) -> Result<HttpResponse, RequestError> {
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|value| value.as_bytes());
    let request = parse_request(req.query_string(), last_event_id, &hub.settings)
        .map_err(RequestError::Invalid)
        .inspect_err(|e| {
            let peer = req.peer_addr().map(|addr| addr.to_string());
            log::info!("{}: {e}", peer.as_deref().unwrap_or("stream client"));
        })?;
    let hub = hub.into_inner();
    // A sidecar's report rides on its poll: noted on arrival, and its end when this returns
    // (or is dropped, its connection closed).
    let mut seen = sidecars.into_inner().poll_arrived(req.headers(), &request);
    let response = match request {
        StreamRequest::Stream { filter, resume } => open_stream(hub, Arc::new(filter), resume),
        StreamRequest::Poll {
            filter,
            revision,
            wait,
        } => long_poll(hub, Arc::new(filter), revision, wait).await,
    };
    seen.answered();
    response
}

fn event_stream_response() -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        // A compression middleware would buffer events; `identity` makes actix's skip us.
        .insert_header((
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        ))
        // Proxies such as nginx must not buffer either.
        .insert_header((
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ));
    response
}

fn open_stream(
    hub: Arc<Hub>,
    filter: Arc<Filter>,
    resume: Option<u64>,
) -> Result<HttpResponse, RequestError> {
    let guard = hub.admit(Mode::Stream)?;
    let start = hub.open_stream(&filter, resume)?;
    let mut backlog = VecDeque::with_capacity(start.frames.len() + 1);
    backlog.push_back((
        None,
        sse::retry(u64::try_from(hub.settings.retry.as_millis()).unwrap_or(u64::MAX)),
    ));
    backlog.extend(
        start
            .frames
            .into_iter()
            .map(|(kind, frame)| (Some(kind), frame)),
    );
    let client = Client {
        hub,
        filter,
        backlog,
        items: start.items,
        finished: false,
        _subscription: start.subscription,
        _guard: guard,
    };
    let body = futures::stream::unfold(client, |mut client| async move {
        let frame = client.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), client))
    });
    Ok(event_stream_response().streaming(body))
}

/// One stream client: its start frames, then the entries the hub queues for it.
struct Client {
    hub: Arc<Hub>,
    filter: Arc<Filter>,
    backlog: VecDeque<(Option<EventKind>, Bytes)>,
    items: mpsc::Receiver<StreamItem>,
    /// Cut off: the resync frame was the last one.
    finished: bool,
    _subscription: Subscription,
    _guard: ClientGuard,
}

impl Client {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some((kind, frame)) = self.backlog.pop_front() {
            if let Some(kind) = kind {
                self.hub.metrics.event_sent(kind);
            }
            return Some(frame);
        }
        if self.finished {
            return None;
        }
        loop {
            // `None` once the hub let go of the client (shut down).
            match self.items.recv().await? {
                StreamItem::Ping => return Some(sse::comment("ping")),
                StreamItem::Entry(entry) => {
                    entry.taken(&self.hub.metrics);
                    // The hub queues only entries that concern the client.
                    if let Some((kind, frame)) = entry.frame_for(&self.filter) {
                        self.hub.metrics.event_sent(kind);
                        return Some(frame);
                    }
                }
                StreamItem::CutOff => {
                    log::info!("stream client fell behind; sending resync");
                    self.hub.metrics.clients_cut_off.inc();
                    self.hub.metrics.event_sent(EventKind::Resync);
                    self.finished = true;
                    return Some(sse::resync());
                }
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Entries this client will never take still count for the fan-out histogram.
        self.items.close();
        while let Ok(item) = self.items.try_recv() {
            if let StreamItem::Entry(entry) = item {
                entry.taken(&self.hub.metrics);
            }
        }
    }
}

async fn long_poll(
    hub: Arc<Hub>,
    filter: Arc<Filter>,
    revision: Option<u64>,
    wait: Duration,
) -> Result<HttpResponse, RequestError> {
    let _guard = hub.admit(Mode::Poll)?;
    let answer = match hub.poll_check(&filter, revision)? {
        PollCheck::Respond(view) => PollAnswer::Snapshot(view.snapshot_frame(&filter)),
        PollCheck::Wait(held) => held.until(tokio::time::Instant::now() + wait).await,
    };
    Ok(match answer {
        PollAnswer::Snapshot(snapshot) => poll_response(&hub, snapshot),
        // Nothing for this client up to `revision`: it may continue from there.
        PollAnswer::Current(revision) => {
            event_stream_response().body(sse::id_only("timeout", revision))
        }
    })
}

fn poll_response(hub: &Hub, snapshot: Bytes) -> HttpResponse {
    hub.metrics.event_sent(EventKind::Snapshot);
    event_stream_response().body(snapshot)
}

#[cfg(test)]
mod tests;
