//! The OpenMetrics text exposition of the registry, with the feed latency's exemplars: what
//! `/metrics` answers a scraper that asks for `application/openmetrics-text` (Prometheus does),
//! while others get the classic text format. The `prometheus` crate encodes only the latter, so
//! this writes the same families the OpenMetrics way: a counter's family is named without
//! `_total` (its samples keep it), histograms carry `# {trace_id="…"} value timestamp` on the
//! buckets that have an exemplar, and the exposition ends with `# EOF`.

use std::fmt::Write as _;

use prometheus::proto::{LabelPair, MetricFamily, MetricType};

use super::exemplars::LatencyExemplars;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The family whose buckets carry exemplars.
const EXEMPLAR_FAMILY: &str = "eaglerank_feed_latency_seconds";

fn escape(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

fn labels(pairs: &[LabelPair], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .map(|l| format!("{}=\"{}\"", l.name(), escape(l.value())))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{}\"", escape(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn label<'a>(pairs: &'a [LabelPair], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// `families` (from `Registry::gather`) as OpenMetrics text.
pub fn encode(families: &[MetricFamily], exemplars: &LatencyExemplars) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for f in families {
        let name = f.name();
        let (family, kind) = match f.get_field_type() {
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                // An OpenMetrics counter's samples end in `_total`: a counter named otherwise
                // (`eaglerank_ranking_reciprocal_rank_sum`) is exposed as `unknown`, so that
                // its series keeps the name rules and dashboards use.
                None => (name, "unknown"),
            },
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {family} {kind}");
        let _ = writeln!(out, "# HELP {family} {}", escape(f.help()));
        for m in f.get_metric() {
            let pairs = m.get_label();
            match f.get_field_type() {
                MetricType::COUNTER => {
                    let suffix = if kind == "counter" { "_total" } else { "" };
                    let _ = writeln!(
                        out,
                        "{family}{suffix}{} {}",
                        labels(pairs, None),
                        number(m.get_counter().value())
                    );
                }
                MetricType::GAUGE => {
                    let _ = writeln!(
                        out,
                        "{family}{} {}",
                        labels(pairs, None),
                        number(m.get_gauge().value())
                    );
                }
                MetricType::UNTYPED => {
                    let _ = writeln!(
                        out,
                        "{family}{} {}",
                        labels(pairs, None),
                        number(m.untyped.value())
                    );
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let with_exemplars = family == EXEMPLAR_FAMILY;
                    let (tenant, transport) = (label(pairs, "tenant"), label(pairs, "transport"));
                    let mut bucket = |upper: f64, count: u64| {
                        let _ = write!(
                            out,
                            "{family}_bucket{} {count}",
                            labels(pairs, Some(("le", &number(upper))))
                        );
                        if let Some(e) = with_exemplars
                            .then(|| exemplars.get(tenant, transport, upper))
                            .flatten()
                        {
                            let _ = write!(
                                out,
                                " # {{trace_id=\"{}\"}} {} {:.3}",
                                e.trace_id,
                                number(e.value),
                                e.at
                            );
                        }
                        out.push('\n');
                    };
                    for b in h.get_bucket() {
                        bucket(b.upper_bound(), b.cumulative_count());
                    }
                    bucket(f64::INFINITY, h.get_sample_count());
                    let _ = writeln!(
                        out,
                        "{family}_sum{} {}",
                        labels(pairs, None),
                        number(h.sample_sum())
                    );
                    let _ = writeln!(
                        out,
                        "{family}_count{} {}",
                        labels(pairs, None),
                        h.get_sample_count()
                    );
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let _ = writeln!(
                            out,
                            "{family}{} {}",
                            labels(pairs, Some(("quantile", &number(q.quantile())))),
                            number(q.value())
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{family}_sum{} {}",
                        labels(pairs, None),
                        number(s.sample_sum())
                    );
                    let _ = writeln!(
                        out,
                        "{family}_count{} {}",
                        labels(pairs, None),
                        s.sample_count()
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}
