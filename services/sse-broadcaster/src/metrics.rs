//! Prometheus metrics of the broadcaster, on their own registry (or one passed in, so
//! `boifi serve` can expose both services on one `/metrics`).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Client connection modes, the `mode` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Stream = 0,
    Poll = 1,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Poll => "poll",
        }
    }
}

/// Event names, the `event` label: the names on the wire.
pub(crate) use boifi_policy::wire::EventKind;

/// Every event name, in `EventKind` order (a kind's index in this list is `kind as usize`).
const EVENT_KINDS: [EventKind; 5] = [
    EventKind::Snapshot,
    EventKind::Policy,
    EventKind::Delete,
    EventKind::Halt,
    EventKind::Resync,
];

pub(crate) struct Metrics {
    pub registry: Registry,
    /// The labelled children, looked up once: a lookup hashes the label values, and every
    /// poll counts itself in and out and counts its answer.
    clients: [IntGauge; 2],
    events_sent: [IntCounter; EVENT_KINDS.len()],
    pub fanout_seconds: Histogram,
    pub watch_restarts: IntCounter,
    pub snapshot_reloads: IntCounter,
    pub clients_cut_off: IntCounter,
    pub clients_rejected: IntCounter,
    pub revision: IntGauge,
}

impl Metrics {
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let clients = IntGaugeVec::new(
            Opts::new(
                "boifi_broadcaster_clients",
                "Connected clients by mode (stream: open event streams; poll: held long polls).",
            ),
            &["mode"],
        )?;
        let events_sent = IntCounterVec::new(
            Opts::new(
                "boifi_broadcaster_events_sent_total",
                "Events written to clients, by event name.",
            ),
            &["event"],
        )?;
        let fanout_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "boifi_broadcaster_fanout_duration_seconds",
                "Time from receiving a store change to handing it to the last client it \
                 concerns (stream, or held poll answering) connected when it arrived.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )?;
        let watch_restarts = IntCounter::new(
            "boifi_broadcaster_watch_restarts_total",
            "Store watches that were lost and reopened.",
        )?;
        let snapshot_reloads = IntCounter::new(
            "boifi_broadcaster_snapshot_reloads_total",
            "Full snapshot reloads after the watch fell behind a store compaction.",
        )?;
        let clients_cut_off = IntCounter::new(
            "boifi_broadcaster_clients_cut_off_total",
            "Stream clients disconnected with a resync event because they fell behind.",
        )?;
        let clients_rejected = IntCounter::new(
            "boifi_broadcaster_clients_rejected_total",
            "Requests refused because the client limit was reached.",
        )?;
        let revision = IntGauge::new(
            "boifi_broadcaster_store_revision",
            "Latest store revision the broadcaster has applied.",
        )?;
        registry.register(Box::new(clients.clone()))?;
        registry.register(Box::new(events_sent.clone()))?;
        registry.register(Box::new(fanout_seconds.clone()))?;
        registry.register(Box::new(watch_restarts.clone()))?;
        registry.register(Box::new(snapshot_reloads.clone()))?;
        registry.register(Box::new(clients_cut_off.clone()))?;
        registry.register(Box::new(clients_rejected.clone()))?;
        registry.register(Box::new(revision.clone()))?;
        // Both modes show up (at 0) before the first client connects; so does every event.
        let clients =
            [Mode::Stream, Mode::Poll].map(|mode| clients.with_label_values(&[mode.label()]));
        let events_sent = EVENT_KINDS.map(|kind| events_sent.with_label_values(&[kind.name()]));
        Ok(Metrics {
            registry,
            clients,
            events_sent,
            fanout_seconds,
            watch_restarts,
            snapshot_reloads,
            clients_cut_off,
            clients_rejected,
            revision,
        })
    }

    pub fn clients(&self, mode: Mode) -> &IntGauge {
        &self.clients[mode as usize]
    }

    pub fn event_sent(&self, kind: EventKind) {
        self.events_sent[kind as usize].inc();
    }

    /// The exposition text of every metric in the registry.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_labelled_by_their_kind() {
        let metrics = Metrics::new(Registry::new()).unwrap();
        for kind in EVENT_KINDS {
            metrics.event_sent(kind);
        }
        metrics.event_sent(EventKind::Halt);
        metrics.clients(Mode::Poll).inc();
        let text = metrics.render().unwrap();
        for (kind, count) in [
            ("snapshot", 1),
            ("policy", 1),
            ("delete", 1),
            ("halt", 2),
            ("resync", 1),
        ] {
            let line = format!("boifi_broadcaster_events_sent_total{{event=\"{kind}\"}} {count}");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains("boifi_broadcaster_clients{mode=\"poll\"} 1"));
        assert!(text.contains("boifi_broadcaster_clients{mode=\"stream\"} 0"));
    }
}
