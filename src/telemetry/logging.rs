//! Log lines: one flat JSON object per line on stdout — `ts` (RFC 3339, UTC), `level`,
//! `service`, then the event's own fields (`event`, `tenant`, `user`, …) in the order it records them,
//! then `trace_id`, `span_id`. Errors are recorded
//! with their whole cause chain.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct JsonLines {
    service: String,
}

impl JsonLines {
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
        }
    }
}

/// The trace and span ids of the current span, when OpenTelemetry is on: a log line leads to
/// its trace.
fn trace_ids<S>(
    ctx: &FmtContext<'_, S, impl for<'a> FormatFields<'a> + 'static>,
) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry::trace::TraceContextExt as _;
    let span = ctx.lookup_current()?;
    let cx = tracing::dispatcher::get_default(|d| {
        tracing_opentelemetry::get_otel_context(&span.id(), d)
    })?;
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| fmt::Error)?;
        let mut line = Line::default();
        line.field("ts", ts.as_str());
        line.field(
            "level",
            event.metadata().level().as_str().to_ascii_lowercase(),
        );
        line.field("service", self.service.as_str());
        let mut fields = FieldsToJson {
            line: &mut line,
            has_event: false,
        };
        event.record(&mut fields);
        let has_event = fields.has_event;
        if let Some((trace_id, span_id)) = trace_ids(ctx) {
            line.field("trace_id", trace_id);
            line.field("span_id", span_id);
        }
        if !has_event {
            // Lines from libraries (actix, ort) carry no event name; their module says where.
            line.field("target", event.metadata().target());
        }
        writer.write_str(line.finish()?)
    }
}

/// One JSON object, written field by field into a buffer (serde_json escapes): a `Map` of
/// `Value`s built per line, then printed, cost a feed ~30 k instructions for its one line.
#[derive(Default)]
struct Line(Vec<u8>);

/// Names the line itself writes: an event field of one of these names is left out rather
/// than written twice.
const RESERVED: [&str; 6] = ["ts", "level", "service", "trace_id", "span_id", "target"];

impl Line {
    fn field(&mut self, name: &str, value: impl serde::Serialize) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        // Writing JSON into a Vec cannot fail for these types (strings, numbers, bools).
        let _ = serde_json::to_writer(&mut self.0, name);
        self.0.push(b':');
        let _ = serde_json::to_writer(&mut self.0, &value);
    }

    fn finish(&mut self) -> Result<&str, fmt::Error> {
        self.0.extend_from_slice(b"}\n");
        std::str::from_utf8(&self.0).map_err(|_| fmt::Error)
    }
}

struct FieldsToJson<'a> {
    line: &'a mut Line,
    has_event: bool,
}

impl FieldsToJson<'_> {
    fn put(&mut self, field: &Field, value: impl serde::Serialize) {
        let name = field.name();
        if RESERVED.contains(&name) {
            return;
        }
        self.has_event |= name == "event";
        self.line.field(name, value);
    }
}

impl Visit for FieldsToJson<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes a non-finite number as null.
        self.put(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        self.put(field, chain);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

/// Log output captured in memory, for tests of what is logged: a subscriber's writer
/// (`.with_writer(move || captured.clone())`).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines a subscriber with this format writes for `log`, parsed.
    fn lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines::new("svc"))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        captured
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_line_is_one_json_object_with_the_events_fields() {
        let got = lines(|| {
            tracing::warn!(
                event = "Something",
                text = "a \"quoted\"\nline\t✓",
                ratio = f64::NAN,
                n = 3u64,
                d = -2i64,
                ok = true,
                level = "not the level"
            );
            tracing::info!(target: "some_library", "no event name");
        });
        assert_eq!(got.len(), 2);
        let line = &got[0];
        assert_eq!(line["level"], "warn", "an event's own `level` is left out");
        assert_eq!(line["service"], "svc");
        assert_eq!(line["event"], "Something");
        assert_eq!(line["text"], "a \"quoted\"\nline\t✓");
        assert_eq!(line["ratio"], serde_json::Value::Null);
        assert_eq!(
            (line["n"].as_u64(), line["d"].as_i64()),
            (Some(3), Some(-2))
        );
        assert_eq!(line["ok"], true);
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
        assert!(line.get("target").is_none());
        assert_eq!(got[1]["target"], "some_library");
        assert_eq!(got[1]["message"], "no event name");
    }
}
