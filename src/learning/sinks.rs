//! Where the served-feature log's records go: rotated JSON Lines files (no Kafka), or the
//! `feature_log.topic` (Kafka configured, so that every replica's records land in one place,
//! keyed by tenant:user).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::config::{FeatureLogSettings, Settings};
use crate::telemetry::events::FeatureLogDropped;
use crate::telemetry::{InternalEvent, Metrics};

/// The files' names: `feature-log-<unix ms, 13 digits>-<pid>-<n>.jsonl`, so that name order is
/// time order.
pub const FILE_PREFIX: &str = "feature-log-";
pub const FILE_SUFFIX: &str = ".jsonl";

pub trait Sink: Send {
    /// One record (a JSON object, no newline), keyed `tenant:user`.
    fn write(&mut self, key: &str, line: &[u8]) -> std::io::Result<()>;
    /// Called when no record waits: flush, rotate by age.
    fn idle(&mut self) -> std::io::Result<()>;
}

/// The sink the settings name: the topic with Kafka configured, else files.
pub fn open(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Box<dyn Sink>> {
    if settings.kafka.enabled() {
        Ok(Box::new(KafkaSink::new(settings, metrics)?))
    } else {
        Ok(Box::new(FileSink::new(&settings.feature_log)))
    }
}

pub struct FileSink {
    dir: PathBuf,
    max_file_bytes: u64,
    max_file_age: Duration,
    max_total_bytes: u64,
    current: Option<OpenFile>,
    opened: u64,
}

struct OpenFile {
    /// Written to since the last idle call: only then is there anything to flush or prune.
    dirty: bool,
    out: BufWriter<File>,
    path: PathBuf,
    since: Instant,
    bytes: u64,
}

impl FileSink {
    pub fn new(settings: &FeatureLogSettings) -> Self {
        Self {
            dir: settings.dir.clone(),
            max_file_bytes: settings.max_file_bytes,
            max_file_age: settings.max_file_age,
            max_total_bytes: settings.max_total_bytes,
            current: None,
            opened: 0,
        }
    }

    fn open(&mut self) -> std::io::Result<&mut OpenFile> {
        if self.current.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            self.opened += 1;
            let name = format!(
                "{FILE_PREFIX}{ms:013}-{}-{}{FILE_SUFFIX}",
                std::process::id(),
                self.opened
            );
            let path = self.dir.join(name);
            let file = File::options().create_new(true).append(true).open(&path)?;
            self.current = Some(OpenFile {
                dirty: false,
                out: BufWriter::with_capacity(64 * 1024, file),
                path,
                since: Instant::now(),
                bytes: 0,
            });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    /// Closes the current file and deletes the oldest ones past `max_total_bytes`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut f) = self.current.take() {
            f.out.flush()?;
            prune(&self.dir, self.max_total_bytes, None)?;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, _key: &str, line: &[u8]) -> std::io::Result<()> {
        let f = self.open()?;
        f.out.write_all(line)?;
        f.out.write_all(b"\n")?;
        f.bytes += line.len() as u64 + 1;
        f.dirty = true;
        if f.bytes >= self.max_file_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn idle(&mut self) -> std::io::Result<()> {
        let Some(f) = &mut self.current else {
            return Ok(());
        };
        if f.since.elapsed() >= self.max_file_age {
            return self.rotate();
        }
        // Idle ticks come every 200 ms: the directory is read again only after new writes.
        if std::mem::take(&mut f.dirty) {
            f.out.flush()?;
            let open = f.path.clone();
            prune(&self.dir, self.max_total_bytes, Some(&open))?;
        }
        Ok(())
    }
}

/// The log's files in `dir`, oldest first, with their sizes.
pub fn files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX) {
            files.push((entry.path(), entry.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes the oldest files (never `open`) while the directory holds more than `max_total`.
fn prune(dir: &Path, max_total: u64, open: Option<&Path>) -> std::io::Result<()> {
    let files = files(dir)?;
    let mut total: u64 = files.iter().map(|(_, n)| n).sum();
    for (path, size) in files {
        if total <= max_total {
            break;
        }
        if Some(path.as_path()) == open {
            continue;
        }
        std::fs::remove_file(&path)?;
        total -= size;
    }
    Ok(())
}

/// Counts records the brokers did not take (after librdkafka's own retries).
struct Deliveries {
    metrics: Arc<Metrics>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            FeatureLogDropped {
                reason: "sink_error",
                error: Some(e),
            }
            .emit(&self.metrics);
        }
    }
}

pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    topic: String,
}

impl KafkaSink {
    fn new(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let producer = settings
            .kafka
            .client_config()
            // Records are training data, not requests: batch them.
            .set("linger.ms", "100")
            .set("compression.type", "lz4")
            .create_with_context(Deliveries { metrics })?;
        Ok(Self {
            producer,
            topic: settings.feature_log.topic.clone(),
        })
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, key: &str, line: &[u8]) -> std::io::Result<()> {
        let record = BaseRecord::to(&self.topic).key(key).payload(line);
        // Refused (e.g. librdkafka's own queue full): let it deliver for a moment, then try
        // once more.
        let sent = match self.producer.send(record) {
            Err((_, record)) => {
                self.producer.poll(Duration::from_millis(100));
                self.producer.send(record)
            }
            sent => sent,
        };
        self.producer.poll(Duration::ZERO);
        sent.map_err(|(e, _)| std::io::Error::other(e))
    }

    fn idle(&mut self) -> std::io::Result<()> {
        self.producer.poll(Duration::ZERO);
        if self.producer.in_flight_count() > 0 {
            self.producer
                .flush(Duration::from_millis(500))
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max_file: u64, max_total: u64) -> FeatureLogSettings {
        FeatureLogSettings {
            sample_rate: 1.0,
            dir: dir.to_owned(),
            topic: String::new(),
            max_file_bytes: max_file,
            max_file_age: Duration::from_secs(3600),
            max_total_bytes: max_total,
            queue_capacity: 10,
        }
    }

    #[test]
    fn files_rotate_by_size_and_the_directory_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("er-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut sink = FileSink::new(&settings(&dir, 1_000, 5_000));
        let line = vec![b'x'; 99];
        for _ in 0..200 {
            sink.write("t:u", &line).unwrap();
        }
        sink.idle().unwrap();
        let files = files(&dir).unwrap();
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        // 20 000 bytes written in files of 1 000; at most 5 000 kept (+ the open one).
        assert!(files.len() >= 4, "{files:?}");
        assert!(total <= 6_000, "{total} bytes kept");
        for (path, _) in &files {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.lines().all(|l| l.len() == 99), "whole lines only");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
