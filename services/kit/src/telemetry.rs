//! Metrics through OpenTelemetry, exposed in the Prometheus text format by the
//! `opentelemetry-prometheus` exporter.
//!
//! Every metric is described once as a [`Metric`] constant in its service's `metrics`
//! module (name, kind, help); the instruments are made from those constants, the docs
//! list the same names and a test keeps the three equal. Names are written in full,
//! Prometheus style (`ringside_<service>_<what>_<unit>`, `_total` on counters): the
//! exporter is told to add no suffix, no scope labels and no `target_info`, so the page
//! shows exactly the names the docs list.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder as _, TextEncoder};

use crate::readiness::Readiness;

/// What kind of instrument a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations in buckets.
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE`.
    pub fn prometheus_type(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric, described once.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    /// The full Prometheus name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// The help text (one sentence).
    pub help: &'static str,
}

impl Metric {
    /// A counter.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            help,
        }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            help,
        }
    }

    /// A histogram.
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Histogram,
            help,
        }
    }
}

/// Why telemetry could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter could not be built.
    #[error("cannot build the Prometheus exporter: {0}")]
    Exporter(String),
    /// The page could not be encoded.
    #[error("cannot encode the metrics page")]
    Encode(#[source] prometheus::Error),
}

/// The metrics of one service: a meter whose instruments the `/metrics` page shows.
#[derive(Clone, Debug)]
pub struct Telemetry {
    service: &'static str,
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    meter: Meter,
}

impl Telemetry {
    /// The telemetry of `service` (`reducer`, `watcher`, ...).
    pub fn new(service: &'static str) -> Result<Self, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter(service);
        Ok(Self {
            service,
            registry,
            provider,
            meter,
        })
    }

    /// The service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The meter, for instruments the helpers below do not cover.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// A counter.
    pub fn counter(&self, metric: &'static Metric) -> Counter<u64> {
        debug_assert_eq!(metric.kind, Kind::Counter, "{}", metric.name);
        self.meter
            .u64_counter(metric.name)
            .with_description(metric.help)
            .build()
    }

    /// A gauge that is set when its value changes.
    pub fn gauge(&self, metric: &'static Metric) -> Gauge<f64> {
        debug_assert_eq!(metric.kind, Kind::Gauge, "{}", metric.name);
        self.meter
            .f64_gauge(metric.name)
            .with_description(metric.help)
            .build()
    }

    /// A gauge read when the page is scraped (`read` runs on every scrape).
    pub fn observed_gauge(
        &self,
        metric: &'static Metric,
        read: impl Fn() -> Vec<(f64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) {
        debug_assert_eq!(metric.kind, Kind::Gauge, "{}", metric.name);
        // The SDK keeps the instrument registered as long as the provider lives.
        let _gauge = self
            .meter
            .f64_observable_gauge(metric.name)
            .with_description(metric.help)
            .with_callback(move |observer| {
                for (value, labels) in read() {
                    observer.observe(value, &labels);
                }
            })
            .build();
    }

    /// A counter read when the page is scraped, from a count kept elsewhere (an atomic
    /// another library updates).
    pub fn observed_counter(
        &self,
        metric: &'static Metric,
        read: impl Fn() -> Vec<(u64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) {
        debug_assert_eq!(metric.kind, Kind::Counter, "{}", metric.name);
        let _counter = self
            .meter
            .u64_observable_counter(metric.name)
            .with_description(metric.help)
            .with_callback(move |observer| {
                for (value, labels) in read() {
                    observer.observe(value, &labels);
                }
            })
            .build();
    }

    /// A histogram with these bucket bounds (chosen for what it measures).
    pub fn histogram(&self, metric: &'static Metric, bounds: &[f64]) -> Histogram<f64> {
        debug_assert_eq!(metric.kind, Kind::Histogram, "{}", metric.name);
        self.meter
            .f64_histogram(metric.name)
            .with_description(metric.help)
            .with_boundaries(bounds.to_vec())
            .build()
    }

    /// Exports `ringside_<service>_ready` (1 ready, 0 not) from `readiness`.
    pub fn export_readiness(&self, readiness: &Readiness) {
        let readiness = readiness.clone();
        let _gauge = self
            .meter
            .u64_observable_gauge(format!("ringside_{}_ready", self.service))
            .with_description("1 while the service is ready (/readyz answers 200), else 0.")
            .with_callback(move |observer| observer.observe(u64::from(readiness.is_ready()), &[]))
            .build();
    }

    /// The Prometheus text page.
    pub fn render(&self) -> Result<String, TelemetryError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(TelemetryError::Encode)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Flushes nothing (a pull exporter) but ends the provider's instruments; for tests
    /// that build many.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// The metric names on a Prometheus text page (`# TYPE` lines), in page order.
pub fn names_on_page(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a docs page lists: the first cell of each table row that starts
/// with `` `<prefix>``, without its label part (`` `x_total{how}` `` is `x_total`).
pub fn names_in_docs(page: &str, prefix: &str) -> Vec<String> {
    let start = format!("| `{prefix}");
    page.lines()
        .filter(|l| l.starts_with(&start))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .map(|name| name.split('{').next().unwrap_or(name).to_owned())
        .collect()
}

/// One sample's value on a Prometheus text page: `name_and_labels` is what precedes
/// the value (`ringside_reducer_epoch`, `x_total{how="published"}`).
pub fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        (head == name_and_labels).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: Metric = Metric::counter("ringside_test_events_total", "Events seen.");
    const DEPTH: Metric = Metric::gauge("ringside_test_depth", "How deep.");
    const SECONDS: Metric = Metric::histogram("ringside_test_step_seconds", "Step time.");

    #[test]
    fn the_page_shows_exactly_the_names_given() {
        let t = Telemetry::new("test").unwrap();
        let events = t.counter(&EVENTS);
        events.add(2, &[KeyValue::new("how", "published")]);
        t.gauge(&DEPTH).record(3.0, &[]);
        t.histogram(&SECONDS, &[0.001, 0.01]).record(0.005, &[]);
        let readiness = Readiness::new();
        readiness.condition("nats").set(true);
        t.export_readiness(&readiness);
        let page = t.render().unwrap();
        let mut names = names_on_page(&page);
        names.sort();
        assert_eq!(
            names,
            [
                "ringside_test_depth",
                "ringside_test_events_total",
                "ringside_test_ready",
                "ringside_test_step_seconds"
            ],
            "{page}"
        );
        assert_eq!(
            sample(&page, "ringside_test_events_total{how=\"published\"}"),
            Some(2.0),
            "{page}"
        );
        assert_eq!(sample(&page, "ringside_test_ready"), Some(1.0));
        assert_eq!(
            sample(&page, "ringside_test_step_seconds_bucket{le=\"0.01\"}"),
            Some(1.0),
            "{page}"
        );
        assert!(
            page.contains("# HELP ringside_test_depth How deep."),
            "{page}"
        );
    }
}
