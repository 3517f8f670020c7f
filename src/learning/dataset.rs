//! `eaglerank dataset export`: the served-feature log (files or topic) joined into a training
//! set. The join happens here, at export time, not in a consumer: the log already holds both
//! sides (feeds and the outcomes that name them, in order per user), so an export can pick its
//! time range and join window after the fact, and nothing is lost to a joiner's state or
//! restarts. It reads the log twice and holds only the outcomes in memory.
//!
//! Output: JSON Lines in the simulator's training-log shape (a schema line, then one row per
//! shown item, rows of a feed contiguous), so `training/train.py` reads both the same way.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::records::{FeedRecord, Record, grade};
use super::sinks;
use crate::config::KafkaSettings;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{0}")]
    Empty(String),
    #[error("{at}: not a served-feature record: {reason}")]
    Corrupt { at: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("reading the topic: {0}")]
    Kafka(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DatasetError {
    let context = context.into();
    move |source| DatasetError::Io { context, source }
}

fn parse(bytes: &[u8], at: impl FnOnce() -> String) -> Result<Record, DatasetError> {
    serde_json::from_slice(bytes).map_err(|e| DatasetError::Corrupt {
        at: at(),
        reason: e.to_string(),
    })
}

/// Visits every record of the log's files in `dir`, oldest file first, line by line. The newest
/// file may end in a line still being written: that one is left out; any other line that does
/// not parse is an error naming its file and line.
pub fn read_files(dir: &Path, visit: &mut dyn FnMut(Record)) -> Result<(), DatasetError> {
    let files = sinks::files(dir).map_err(io(format!("reading {}", dir.display())))?;
    if files.is_empty() {
        return Err(DatasetError::Empty(format!(
            "no served-feature log in {} (is feature_log.sample_rate > 0, and did the service \
             serve feeds?)",
            dir.display()
        )));
    }
    let last = files.len() - 1;
    for (n, (path, _)) in files.iter().enumerate() {
        let reading = || format!("reading {}", path.display());
        let file = std::fs::File::open(path).map_err(io(reading()))?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::new();
        for number in 1.. {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io(reading()))? == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            if !complete && n == last {
                break; // still being written
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if !text.is_empty() {
                visit(parse(text, || format!("{}:{number}", path.display()))?);
            }
        }
    }
    Ok(())
}

/// The end offset of each partition of a topic, as of one moment: every pass of an export reads
/// up to the same ends.
pub type Ends = HashMap<i32, i64>;

/// Visits every record on `topic`, from the beginning of each partition to its end as of the
/// first call (`ends` keeps those ends for the next).
pub fn read_topic(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
    ends: &mut Option<Ends>,
    visit: &mut dyn FnMut(Record),
) -> Result<(), DatasetError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let k = |e: rdkafka::error::KafkaError| DatasetError::Kafka(e.to_string());
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "eaglerank-dataset-export")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(k)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(k)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ends.is_none() {
        let mut found = Ends::new();
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout).map_err(k)?;
            if high > low {
                found.insert(p, high);
            }
        }
        *ends = Some(found);
    }
    let mut ends = ends.clone().unwrap_or_default();
    let mut assignment = TopicPartitionList::new();
    for p in ends.keys() {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(k)?;
    }
    if ends.is_empty() {
        return Err(DatasetError::Empty(format!(
            "no served-feature records on topic {topic:?}"
        )));
    }
    consumer.assign(&assignment).map_err(k)?;
    while !ends.is_empty() {
        let message = consumer
            .poll(timeout)
            .ok_or_else(|| DatasetError::Kafka(format!("no message within {timeout:?}")))?
            .map_err(k)?;
        let (p, offset) = (message.partition(), message.offset());
        // Records past the fixed end (written since) belong to the next export.
        if ends.get(&p).is_some_and(|end| offset < *end) {
            visit(parse(message.payload().unwrap_or_default(), || {
                format!("{topic}[{p}]@{offset}")
            })?);
        }
        if ends.get(&p).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&p);
        }
    }
    Ok(())
}

/// Which feeds to export, and how long after a feed its outcomes count.
#[derive(Debug, Clone)]
pub struct Selection {
    pub tenant: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<f64>,
    /// Unix seconds, exclusive.
    pub until: Option<f64>,
    pub join_window: Duration,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Labels {
    pub none: u64,
    pub click: u64,
    pub add_to_cart: u64,
    pub purchase: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub bytes: u64,
    pub requests: u64,
    pub rows: u64,
    pub labels: Labels,
    /// Unix seconds of the first and last feed exported.
    pub since: f64,
    pub until: f64,
    pub features: Vec<String>,
    /// Feeds left out because their model had other features than the first one's.
    pub skipped_other_features: u64,
}

#[derive(Serialize)]
struct Schema<'a> {
    features: &'a [String],
    tenant: Option<&'a str>,
    policy: &'static str,
    source: &'static str,
    requests: u64,
    rows: u64,
    since: f64,
    until: f64,
    labels: &'a Labels,
    join_window_seconds: u64,
}

#[derive(Serialize)]
struct Row<'a> {
    request: &'a str,
    user_id: &'a str,
    item_id: &'a str,
    position: u32,
    /// 3 purchase, 2 add to cart, 1 click, 0 shown only.
    label: u8,
    features: &'a [f32],
    ts: f64,
    logged_score: f32,
    model: &'a str,
    version: &'a str,
    experiment: Option<&'a str>,
    arm: Option<&'a str>,
}

/// An outcome as the join needs it: item, label grade, time.
type Graded = (String, u8, f64);

/// What the first pass learns: the outcomes by (tenant, request id), and which feeds are
/// exported.
struct FirstPass {
    outcomes: HashMap<(String, String), Vec<Graded>>,
    /// The earliest selected feed's time and feature names: the set's columns.
    first: Option<(f64, Vec<String>)>,
}

/// Joins the log into the training set written to `out`, in two passes over it (`read` visits
/// every record, and is called twice): the outcomes first — all that is held in memory — then
/// the feeds, streamed into rows. Rows follow the log's order (files: time order; a topic:
/// per partition); `train.py` orders by time itself.
pub fn export(
    read: impl Fn(&mut dyn FnMut(Record)) -> Result<(), DatasetError>,
    selection: &Selection,
    out: &Path,
) -> Result<Summary, DatasetError> {
    let selected = |f: &FeedRecord| {
        selection.tenant.as_ref().is_none_or(|t| *t == f.tenant)
            && selection.since.is_none_or(|s| f.ts >= s)
            && selection.until.is_none_or(|u| f.ts < u)
    };
    let mut pass = FirstPass {
        outcomes: HashMap::new(),
        first: None,
    };
    read(&mut |record| match record {
        Record::Feed(f) => {
            if selected(&f) && pass.first.as_ref().is_none_or(|(ts, _)| f.ts < *ts) {
                pass.first = Some((f.ts, f.features));
            }
        }
        Record::Outcome(o) => pass
            .outcomes
            .entry((o.tenant, o.request_id))
            .or_default()
            .push((o.item_id, grade(&o.event), o.ts)),
    })?;
    let Some((first_ts, features)) = pass.first else {
        return Err(DatasetError::Empty(
            "no logged feed in the selected range and tenant".into(),
        ));
    };
    let window = selection.join_window.as_secs_f64();
    let mut summary = Summary {
        out: out.to_owned(),
        bytes: 0,
        requests: 0,
        rows: 0,
        labels: Labels::default(),
        since: first_ts,
        until: first_ts,
        features: features.clone(),
        skipped_other_features: 0,
    };
    // The rows go to a file beside `out` first: the schema line that heads `out` needs their
    // counts.
    let rows_path = out.with_extension("rows.tmp");
    let writing = |path: &Path| format!("writing {}", path.display());
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(writing(out)))?;
    }
    let mut rows = std::io::BufWriter::new(
        std::fs::File::create(&rows_path).map_err(io(writing(&rows_path)))?,
    );
    let mut failed: Option<std::io::Error> = None;
    read(&mut |record| {
        let Record::Feed(feed) = record else { return };
        if !selected(&feed) || failed.is_some() {
            return;
        }
        if feed.features != features {
            summary.skipped_other_features += 1;
            return;
        }
        let joined = pass
            .outcomes
            .get(&(feed.tenant.clone(), feed.request_id.clone()));
        summary.requests += 1;
        summary.until = summary.until.max(feed.ts);
        for item in &feed.items {
            let label = joined
                .into_iter()
                .flatten()
                .filter(|(id, _, ts)| *id == item.item_id && *ts <= feed.ts + window)
                .map(|(_, grade, _)| *grade)
                .max()
                .unwrap_or(0);
            match label {
                3 => summary.labels.purchase += 1,
                2 => summary.labels.add_to_cart += 1,
                1 => summary.labels.click += 1,
                _ => summary.labels.none += 1,
            }
            summary.rows += 1;
            let row = Row {
                request: &feed.request_id,
                user_id: &feed.user_id,
                item_id: &item.item_id,
                position: item.position,
                label,
                features: &item.features,
                ts: feed.ts,
                logged_score: item.score,
                model: &feed.model,
                version: &feed.version,
                experiment: feed.experiment.as_deref(),
                arm: feed.arm.as_deref(),
            };
            let written = serde_json::to_writer(&mut rows, &row)
                .map_err(std::io::Error::from)
                .and_then(|()| rows.write_all(b"\n"));
            if let Err(e) = written {
                failed = Some(e);
                return;
            }
        }
    })?;
    let finish = || -> std::io::Result<u64> {
        if let Some(e) = failed {
            return Err(e);
        }
        rows.flush()?;
        drop(rows);
        let schema = Schema {
            features: &features,
            tenant: selection.tenant.as_deref(),
            policy: "live",
            source: "served-feature log",
            requests: summary.requests,
            rows: summary.rows,
            since: summary.since,
            until: summary.until,
            labels: &summary.labels,
            join_window_seconds: selection.join_window.as_secs(),
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
        serde_json::to_writer(&mut file, &schema)?;
        file.write_all(b"\n")?;
        std::io::copy(&mut std::fs::File::open(&rows_path)?, &mut file)?;
        file.flush()?;
        std::fs::remove_file(&rows_path)?;
        Ok(std::fs::metadata(out)?.len())
    };
    summary.bytes = finish().map_err(io(writing(out)))?;
    Ok(summary)
}

/// Reads the training set's schema line back (tests, tools).
pub fn read_schema(path: &Path) -> std::io::Result<serde_json::Value> {
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::open(path)?).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::records::{LoggedItem, OutcomeRecord};

    fn feed(id: &str, ts: f64, items: &[&str]) -> Record {
        Record::Feed(FeedRecord {
            request_id: id.into(),
            tenant: "t".into(),
            user_id: "u".into(),
            ts,
            model: "m".into(),
            version: "1".into(),
            experiment: None,
            arm: None,
            page: 1,
            features: vec!["a".into(), "b".into()],
            items: items
                .iter()
                .enumerate()
                .map(|(i, item)| LoggedItem {
                    item_id: (*item).into(),
                    position: i as u32,
                    score: 1.0 - i as f32 / 10.0,
                    features: vec![i as f32, 1.0],
                })
                .collect(),
        })
    }

    fn outcome(id: &str, item: &str, event: &str, ts: f64) -> Record {
        Record::Outcome(OutcomeRecord {
            request_id: id.into(),
            tenant: "t".into(),
            user_id: "u".into(),
            item_id: item.into(),
            event: event.into(),
            ts,
        })
    }

    fn rows(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn outcomes_grade_the_items_of_their_feed_within_the_window() {
        let out = std::env::temp_dir().join(format!("er-dataset-{}.jsonl", std::process::id()));
        let records = vec![
            feed("r1", 100.0, &["i1", "i2", "i3"]),
            outcome("r1", "i1", "impression", 101.0),
            outcome("r1", "i1", "click", 102.0),
            outcome("r1", "i2", "click", 103.0),
            outcome("r1", "i2", "add_to_cart", 104.0),
            outcome("r1", "i3", "purchase", 100.0 + 4000.0), // after the window
            feed("r2", 200.0, &["i1"]),
            outcome("r2", "i1", "purchase", 201.0),
            outcome("r9", "i1", "click", 201.0), // a feed not logged
        ];
        let selection = Selection {
            tenant: None,
            since: None,
            until: None,
            join_window: Duration::from_secs(1800),
        };
        let from = |records: Vec<Record>| {
            move |visit: &mut dyn FnMut(Record)| {
                records.iter().cloned().for_each(&mut *visit);
                Ok(())
            }
        };
        let s = export(from(records.clone()), &selection, &out).unwrap();
        assert_eq!((s.requests, s.rows), (2, 4));
        assert_eq!(
            (
                s.labels.none,
                s.labels.click,
                s.labels.add_to_cart,
                s.labels.purchase
            ),
            (1, 1, 1, 1)
        );
        let r = rows(&out);
        let labels: Vec<u64> = r.iter().map(|r| r["label"].as_u64().unwrap()).collect();
        assert_eq!(labels, [1, 2, 0, 3]);
        assert_eq!(r[1]["features"], serde_json::json!([1.0, 1.0]));
        assert_eq!(r[3]["request"], "r2");
        assert_eq!(read_schema(&out).unwrap()["policy"], "live");
        // A time range keeps the feeds served in it (and their outcomes).
        let later = Selection {
            since: Some(150.0),
            ..selection.clone()
        };
        let s = export(from(records.clone()), &later, &out).unwrap();
        assert_eq!((s.requests, s.labels.purchase), (1, 1));
        // Nothing in range: an error, not an empty file.
        let none = Selection {
            since: Some(1e12),
            ..selection
        };
        assert!(matches!(
            export(from(records), &none, &out),
            Err(DatasetError::Empty(_))
        ));
        std::fs::remove_file(&out).unwrap();
    }

    #[test]
    fn a_corrupt_line_is_named_and_a_partial_last_line_is_not() {
        let dir = std::env::temp_dir().join(format!("er-dataset-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let read = |dir: &Path| {
            let mut records = Vec::new();
            read_files(dir, &mut |r| records.push(r)).map(|()| records)
        };
        assert!(matches!(read(&dir), Err(DatasetError::Empty(_))));
        let line = serde_json::to_string(&feed("r1", 1.0, &["i1"])).unwrap();
        let first = dir.join("feature-log-0000000000001-1-1.jsonl");
        let newest = dir.join("feature-log-0000000000002-1-2.jsonl");
        std::fs::write(&first, format!("{line}\n")).unwrap();
        std::fs::write(&newest, format!("{line}\n{{\"kind\":\"fe")).unwrap();
        assert_eq!(read(&dir).unwrap().len(), 2);
        std::fs::write(&first, format!("{line}\nnot json\n")).unwrap();
        let err = read(&dir).unwrap_err().to_string();
        assert!(
            err.contains("feature-log-0000000000001-1-1.jsonl:2"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
