//! The global subscriber: JSON (or pretty) log lines, and — when an OTLP endpoint is
//! configured — OpenTelemetry spans exported over OTLP/HTTP with a parent-based ratio sampler.
//!
//! Export never slows a request: spans go to a bounded queue drained by the SDK's batch
//! thread. The SDK does not expose how many spans its queue drops, so the queue bound is
//! enforced here, in front of it, where drops can be counted
//! (`eaglerank_trace_spans_dropped_total`).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus::IntCounter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::logging::JsonLines;
use crate::config::{LogFormat, LogSettings, TracingSettings};

/// Process-wide, like the tracer itself; every app registry exposes them.
pub static SPANS_ENDED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "eaglerank_trace_spans_ended_total",
        "Sampled spans ended and handed to the export queue.",
    )
    .expect("static metric definition")
});
pub static SPANS_EXPORTED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "eaglerank_trace_spans_exported_total",
        "Spans the OTLP endpoint accepted.",
    )
    .expect("static metric definition")
});
pub static SPANS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "eaglerank_trace_spans_dropped_total",
        "Spans dropped because the export queue was full or the export failed.",
    )
    .expect("static metric definition")
});

/// Spans ended but not yet exported (or dropped).
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// Flushes and shuts the tracer down when dropped (at exit, after SIGTERM's drain).
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber from config; OTLP export when an endpoint is configured
/// (`tracing.otlp_endpoint`, or the standard `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`).
pub fn init(log: &LogSettings, tracing: &TracingSettings, service: &str) -> TracingGuard {
    let provider = tracing.endpoint().and_then(|endpoint| {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
        use opentelemetry_otlp::WithExportConfig as _;
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match builder.build() {
            Ok(exporter) => Some(provider(exporter, tracing, service)),
            Err(e) => {
                eprintln!("tracing disabled: cannot build the OTLP exporter: {e}");
                None
            }
        }
    });
    install(log, service, provider)
}

/// A tracer provider exporting through `exporter` in batches, behind the counting queue.
pub fn provider<E: SpanExporter + 'static>(
    exporter: E,
    settings: &TracingSettings,
    service: &str,
) -> SdkTracerProvider {
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .with_scheduled_delay(settings.export_delay)
        .build();
    let processor = BatchSpanProcessor::builder(CountingExporter(exporter))
        .with_batch_config(batch)
        .build();
    SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_span_processor(BoundedQueue {
            inner: processor,
            capacity: settings.max_queue_size as u64,
        })
        .build()
}

/// A JSON line carries its event's fields only (spans reach OpenTelemetry through their own
/// layer), yet the fmt layer formats every span's fields into a string when the span opens,
/// with ANSI colours: ~4 % of a cheap model's feed CPU for strings nobody read.
struct SpanFieldsUnused;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for SpanFieldsUnused {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _: tracing_subscriber::fmt::format::Writer<'w>,
        _: R,
    ) -> std::fmt::Result {
        Ok(())
    }
}

/// Installs the global subscriber with an optional tracer provider (tests pass one with an
/// in-memory exporter).
pub fn install(
    log: &LogSettings,
    service: &str,
    provider: Option<SdkTracerProvider>,
) -> TracingGuard {
    let _ = subscriber(log, service, provider.as_ref()).try_init();
    TracingGuard { provider }
}

/// The subscriber [`install`] makes global: JSON (or pretty) logs and, with a provider, the
/// OpenTelemetry layer.
fn subscriber(
    log: &LogSettings,
    service: &str,
    provider: Option<&SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},actix_server=warn", log.level)));
    let fmt = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines::new(service))
            .fmt_fields(SpanFieldsUnused)
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
    };
    // Each layer its own filter: the log level (`log.level`, RUST_LOG) decides what is logged,
    // never what is traced — with one global filter, `log.level = "warn"` silently dropped the
    // info-level spans every trace (and every latency exemplar) is made of.
    // A JSON line holds its event's fields only, so without OpenTelemetry no layer wants a
    // span: the log layer takes events alone, and every span is disabled at its callsite
    // (no registry slot, no enter and exit; the request's root span not even built: see
    // `http::request_span`). That was ~10 spans and ~50 k instructions a feed kept for nobody.
    let traced = provider.is_some();
    let filter = filter.and(filter_fn(move |m| traced || m.is_event()));
    // A list rather than an `Option` layer: a `None` layer counts as interested in every
    // callsite, which would keep the spans on.
    let mut layers = vec![fmt.with_filter(filter).boxed()];
    if let Some(p) = provider {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let otel = tracing_opentelemetry::layer()
            .with_tracer(p.tracer("eaglerank"))
            .with_filter(EnvFilter::new("info,actix_server=warn"));
        layers.insert(0, otel.boxed());
    }
    tracing_subscriber::registry().with(layers)
}

#[cfg(test)]
mod subscriber_tests {
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    use super::*;

    #[test]
    fn without_opentelemetry_spans_are_off_and_events_still_log() {
        let settings = crate::config::Settings::load(&[]).unwrap();
        let sub = subscriber(&settings.log, "test", None);
        tracing::subscriber::with_default(sub, || {
            assert!(tracing::info_span!("feed.session").is_disabled());
            assert!(!tracing::span_enabled!(tracing::Level::ERROR));
            assert!(tracing::event_enabled!(tracing::Level::ERROR));
        });
    }

    #[test]
    fn a_quiet_log_level_still_traces() {
        let mut settings = crate::config::Settings::load(&[]).unwrap();
        settings.log.level = "error".into();
        settings.tracing.sample_ratio = 1.0;
        let exporter = InMemorySpanExporter::default();
        let provider = provider(exporter.clone(), &settings.tracing, "test");
        let sub = subscriber(&settings.log, "test", Some(&provider));
        tracing::subscriber::with_default(sub, || {
            tracing::info_span!("feed.session").in_scope(|| {});
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(
            spans.len(),
            1,
            "the info span is traced though only errors are logged"
        );
        assert_eq!(spans[0].name, "feed.session");
    }
}

#[derive(Debug)]
struct BoundedQueue {
    inner: BatchSpanProcessor,
    capacity: u64,
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        SPANS_ENDED.inc();
        let admitted = IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            SPANS_DROPPED.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}

#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.0.export(batch).await;
        IN_FLIGHT.fetch_sub(n.min(IN_FLIGHT.load(Ordering::Acquire)), Ordering::AcqRel);
        match &result {
            Ok(()) => SPANS_EXPORTED.inc_by(n),
            Err(_) => SPANS_DROPPED.inc_by(n),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
}
