//! The bridge's metrics, each described once ([`ALL`], which docs/bridge.md lists and
//! a test keeps equal to the page).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use ringside_kit::{Metric, Telemetry};

/// WebSocket clients connected.
pub const CLIENTS: Metric = Metric::gauge(
    "ringside_bridge_clients",
    "WebSocket clients connected now.",
);
/// Clients refused at the door.
pub const CLIENTS_REFUSED: Metric = Metric::counter(
    "ringside_bridge_clients_refused_total",
    "WebSocket upgrades refused, by reason: origin (not the page's own or an allowed one), limit (RINGSIDE_BRIDGE_MAX_CLIENTS reached).",
);
/// Clients closed by the bridge.
pub const CLIENTS_CLOSED: Metric = Metric::counter(
    "ringside_bridge_clients_closed_total",
    "WebSocket clients the bridge closed, by reason: idle (silent past the idle timeout), stuck (a frame not taken within the send timeout), refused (a frame it does not accept).",
);
/// Frames sent.
pub const FRAMES_SENT: Metric = Metric::counter(
    "ringside_bridge_frames_sent_total",
    "Frames written to WebSocket clients.",
);
/// Frames from clients refused.
pub const FRAMES_REFUSED: Metric = Metric::counter(
    "ringside_bridge_frames_refused_total",
    "Frames from clients refused, by reason: bad (not a ping), oversized (over 4 KiB).",
);
/// Resyncs sent to clients.
pub const CLIENT_RESYNCS: Metric = Metric::counter(
    "ringside_bridge_client_resyncs_total",
    "Resyncs sent to clients, by reason: behind (the client fell more than the queue behind), ring (the bridge re-synced the ring).",
);
/// Stored events relayed.
pub const EVENTS: Metric = Metric::counter(
    "ringside_bridge_events_total",
    "Stored events of the ring the bridge handled and relayed.",
);
/// Messages skipped.
pub const MALFORMED: Metric = Metric::counter(
    "ringside_bridge_malformed_total",
    "Messages skipped because they are not valid events of the ring (stored, load or traffic), and unusable snapshots.",
);
/// Ring resyncs.
pub const RING_RESYNCS: Metric = Metric::counter(
    "ringside_bridge_ring_resyncs_total",
    "Times the bridge started the ring again from a snapshot because an epoch was missing or did not fit.",
);
/// The epoch shown.
pub const EPOCH: Metric = Metric::gauge(
    "ringside_bridge_epoch",
    "The ring's epoch as the bridge shows it.",
);
/// The stream position.
pub const SEQUENCE: Metric = Metric::gauge(
    "ringside_bridge_sequence",
    "Stream sequence of the last stored event the bridge handled.",
);
/// API requests.
pub const API_REQUESTS: Metric = Metric::counter(
    "ringside_bridge_api_requests_total",
    "Requests to the JSON API, by endpoint (ring, events, key, status) and outcome (ok, error).",
);

/// Every metric of the bridge.
pub const ALL: [&Metric; 12] = [
    &CLIENTS,
    &CLIENTS_REFUSED,
    &CLIENTS_CLOSED,
    &FRAMES_SENT,
    &FRAMES_REFUSED,
    &CLIENT_RESYNCS,
    &EVENTS,
    &MALFORMED,
    &RING_RESYNCS,
    &EPOCH,
    &SEQUENCE,
    &API_REQUESTS,
];

/// The instruments.
#[derive(Clone, Debug)]
pub struct Metrics {
    clients: Arc<AtomicI64>,
    refused: Counter<u64>,
    closed: Counter<u64>,
    sent: Counter<u64>,
    frames_refused: Counter<u64>,
    client_resyncs: Counter<u64>,
    events: Counter<u64>,
    malformed: Counter<u64>,
    ring_resyncs: Counter<u64>,
    epoch: Gauge<f64>,
    sequence: Gauge<f64>,
    api: Counter<u64>,
}

impl Metrics {
    /// Registers the bridge's instruments.
    pub fn new(telemetry: &Telemetry) -> Metrics {
        let clients = Arc::new(AtomicI64::new(0));
        let read = Arc::clone(&clients);
        telemetry.observed_gauge(&CLIENTS, move || {
            vec![(read.load(Ordering::Relaxed) as f64, Vec::new())]
        });
        Metrics {
            clients,
            refused: telemetry.counter(&CLIENTS_REFUSED),
            closed: telemetry.counter(&CLIENTS_CLOSED),
            sent: telemetry.counter(&FRAMES_SENT),
            frames_refused: telemetry.counter(&FRAMES_REFUSED),
            client_resyncs: telemetry.counter(&CLIENT_RESYNCS),
            events: telemetry.counter(&EVENTS),
            malformed: telemetry.counter(&MALFORMED),
            ring_resyncs: telemetry.counter(&RING_RESYNCS),
            epoch: telemetry.gauge(&EPOCH),
            sequence: telemetry.gauge(&SEQUENCE),
            api: telemetry.counter(&API_REQUESTS),
        }
    }

    /// A client connected (`+1`) or left (`-1`).
    pub(crate) fn client(&self, delta: i64) {
        self.clients.fetch_add(delta, Ordering::Relaxed);
    }

    /// Clients connected now.
    pub(crate) fn clients(&self) -> i64 {
        self.clients.load(Ordering::Relaxed)
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        self.closed.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn sent(&self) {
        self.sent.add(1, &[]);
    }

    pub(crate) fn frame_refused(&self, reason: &'static str) {
        self.frames_refused
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn client_resync(&self, reason: &'static str) {
        self.client_resyncs
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn relayed(&self) {
        self.events.add(1, &[]);
    }

    pub(crate) fn malformed(&self) {
        self.malformed.add(1, &[]);
    }

    pub(crate) fn resynced_ring(&self) {
        self.ring_resyncs.add(1, &[]);
    }

    pub(crate) fn epoch(&self, epoch: u64, seq: u64) {
        self.epoch.record(epoch as f64, &[]);
        self.sequence.record(seq as f64, &[]);
    }

    pub(crate) fn api(&self, endpoint: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.api.add(
            1,
            &[
                KeyValue::new("endpoint", endpoint),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_docs_list_every_metric() {
        let telemetry = Telemetry::new("bridge").unwrap();
        let m = Metrics::new(&telemetry);
        m.refused("origin");
        m.closed("idle");
        m.sent();
        m.frame_refused("bad");
        m.client_resync("behind");
        m.relayed();
        m.malformed();
        m.resynced_ring();
        m.epoch(1, 2);
        m.api("ring", true);
        let page = telemetry.render().unwrap();
        let mut on_page = ringside_kit::telemetry::names_on_page(&page);
        on_page.sort();
        let mut listed: Vec<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
        listed.sort();
        assert_eq!(on_page, listed, "{page}");
        let docs = include_str!("../../../docs/bridge.md");
        let mut documented = ringside_kit::telemetry::names_in_docs(docs, "ringside_bridge_");
        documented.sort();
        assert_eq!(documented, listed);
    }
}
