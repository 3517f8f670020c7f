//! `KafkaConsumer`: reads the event topic in a consumer group and applies batches through the
//! same `Ingestor` as the in-process path. Offsets are committed only after the batch they
//! cover was written (at-least-once; replays are harmless thanks to `event_id` dedup).
//!
//! Failures are of two kinds. A message that can never apply (`ingest::kafka::Rejection`:
//! unparseable, too large, invalid, unknown tenant or item) is counted, produced to the
//! dead-letter topic and committed with its batch: one poison message never blocks its
//! partition. A store that cannot take the batch (Redis down) is transient: the same batch is
//! retried, backing off up to `kafka.retry_backoff_max_ms`, while the lag grows; the actor is
//! not restarted for it, nor for a failed commit (the next one covers it). A broken consumer
//! (every broker down) stops the actor: its supervisor restarts it, after a delay that doubles
//! while failures come quickly, and it resumes from the last committed offset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::FutureExt as _;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::lifecycle::{Lifecycle, supervised_actor};
use super::{ActorHealth, FeedError};
use crate::config::{EventSettings, KafkaSettings};
use crate::ingest::kafka::{DeadLetter, DeadLetters, Rejection, triage};
use crate::ingest::{self, Ingestor, Source};
use crate::store::StoreError;
use crate::telemetry::events::{
    EventsDeadLettered, EventsRejected, KafkaBatchRetried, KafkaCommitFailed, KafkaConsumerFailed,
    KafkaLagMeasured,
};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "kafka_consumer";

pub struct KafkaConsumer {
    kafka: KafkaSettings,
    events: EventSettings,
    /// The configured tenants: a message for another one is dead-lettered.
    tenants: Arc<HashSet<String>>,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    consumer: Option<Arc<StreamConsumer>>,
    /// How long a restart waits before connecting again (0 at the first start).
    reconnect_delay: Duration,
    /// When the running consumer last received a batch or retried one: a consumer with lag
    /// and no activity for `kafka.stall_timeout_seconds` is rebuilt.
    activity: Arc<Mutex<Instant>>,
    /// Paused by an operator (`Pause`): lag without activity is expected then.
    paused: bool,
}

impl KafkaConsumer {
    pub fn new(
        kafka: KafkaSettings,
        events: EventSettings,
        tenants: Arc<HashSet<String>>,
        ingestor: Arc<Ingestor>,
        metrics: Arc<Metrics>,
        health: Arc<ActorHealth>,
    ) -> Self {
        Self {
            kafka,
            events,
            tenants,
            ingestor,
            metrics,
            health,
            consumer: None,
            reconnect_delay: Duration::ZERO,
            activity: Arc::new(Mutex::new(Instant::now())),
            paused: false,
        }
    }

    fn connect(&self) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
        let consumer: StreamConsumer = self
            .kafka
            .client_config()
            .set("group.id", &self.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        consumer.subscribe(&[&self.kafka.topic])?;
        Ok(consumer)
    }

    /// Connects and consumes until the consumer breaks; then stops the actor, whose supervisor
    /// restarts it (after `reconnect_delay`).
    fn consume(&mut self, ctx: &mut Context<Self>) {
        let connected = (|| -> Result<_, ingest::kafka::KafkaError> {
            Ok((self.connect()?, DeadLetters::new(&self.kafka)?))
        })();
        let (consumer, dead_letters) = match connected {
            Ok((c, d)) => (Arc::new(c), d),
            Err(e) => {
                KafkaConsumerFailed { error: &e }.emit(&self.metrics);
                ctx.run_later(Duration::from_secs(1), |_, ctx| ctx.stop());
                return;
            }
        };
        self.consumer = Some(consumer.clone());
        self.activity = Arc::new(Mutex::new(Instant::now()));
        self.paused = false;
        let cx = BatchContext {
            activity: self.activity.clone(),
            ingestor: self.ingestor.clone(),
            events: self.events.clone(),
            tenants: self.tenants.clone(),
            dead_letters,
            max_message_bytes: self.kafka.max_message_bytes,
            metrics: self.metrics.clone(),
        };
        let (max_batch, max_backoff) = (self.kafka.max_batch, self.kafka.retry_backoff_max);
        let run = async move {
            loop {
                let first = consumer.recv().await.map_err(|e| e.to_string())?.detach();
                cx.touch();
                let mut batch = vec![first];
                // Whatever else arrives within 2 ms, up to a batch: writes are pipelined per
                // batch. Messages already queued are taken without a timer each. An error
                // ends the batch; the next `recv` meets it again.
                let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
                while batch.len() < max_batch {
                    let next = match consumer.recv().now_or_never() {
                        Some(next) => next,
                        None => match tokio::time::timeout_at(deadline, consumer.recv()).await {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    };
                    match next {
                        Ok(message) => batch.push(message.detach()),
                        Err(_) => break,
                    }
                }
                apply_until_done(&cx, &batch, max_backoff).await;
                // A failed commit loses nothing: the next batch's commit covers these offsets,
                // and a replay after a restart is deduplicated.
                if let Err(error) = consumer.commit(&next_offsets(&batch), CommitMode::Async) {
                    KafkaCommitFailed { error: &error }.emit(&cx.metrics);
                }
            }
        };
        let started = Instant::now();
        ctx.spawn(actix::fut::wrap_future::<_, Self>(run).map(
            move |result: Result<(), String>, act, ctx| {
                if let Err(error) = result {
                    // A broken consumer (every broker down, say) is rebuilt by a restart: a
                    // fresh one rejoins the group and refetches the metadata. (Waiting for the
                    // same one to resume was tried: against the mock cluster it stayed
                    // assigned and never fetched again.) The delay doubles while the failures
                    // come quickly, so that an outage costs a few restarts, not a loop.
                    act.reconnect_delay = if started.elapsed() > RECONNECT_DELAY_RESET {
                        RETRY_BACKOFF_START
                    } else {
                        (act.reconnect_delay * 2)
                            .clamp(RETRY_BACKOFF_START, act.kafka.retry_backoff_max)
                    };
                    KafkaConsumerFailed { error: &error }.emit(&act.metrics);
                }
                ctx.stop();
            },
        ));
    }

    /// Lag per assigned partition: high watermark minus committed offset. Blocking librdkafka
    /// calls, so off the actor's thread.
    fn report_lag(&mut self, ctx: &mut Context<Self>) {
        let Some(consumer) = self.consumer.clone() else {
            return;
        };
        let topic = self.kafka.topic.clone();
        let lag = tokio::task::spawn_blocking(move || -> Option<Vec<(i32, i64)>> {
            let timeout = Duration::from_secs(2);
            let assigned = consumer.assignment().ok()?;
            let committed = consumer.committed_offsets(assigned.clone(), timeout).ok()?;
            let mut out = Vec::new();
            for elem in committed.elements_for_topic(&topic) {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, elem.partition(), timeout)
                    .ok()?;
                let position = match elem.offset() {
                    Offset::Offset(o) => o,
                    _ => low,
                };
                out.push((elem.partition(), (high - position).max(0)));
            }
            Some(out)
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(lag).map(|lag, act, ctx| {
                if let Ok(Some(lag)) = lag {
                    KafkaLagMeasured {
                        topic: &act.kafka.topic,
                        lag: &lag,
                    }
                    .emit(&act.metrics);
                    // Messages wait, yet nothing was received or retried for a while: the consumer
                    // is stuck (seen after a broker outage: still assigned, never fetching again).
                    // A restart rebuilds it.
                    let idle = lock(&act.activity).elapsed();
                    let waiting: i64 = lag.iter().map(|(_, n)| n).sum();
                    if waiting > 0 && !act.paused && idle > act.kafka.stall_timeout {
                        let error = format!(
                            "stalled: {waiting} messages waiting and nothing received for {idle:?}"
                        );
                        KafkaConsumerFailed { error: &error }.emit(&act.metrics);
                        ctx.stop();
                    }
                }
            }),
        );
    }
}

/// The first wait before retrying what failed for a passing reason; it doubles up to
/// `kafka.retry_backoff_max_ms`.
const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);

/// A consumer that ran this long before breaking had recovered: its successor reconnects after
/// the shortest delay again.
const RECONNECT_DELAY_RESET: Duration = Duration::from_secs(30);

fn lock(activity: &Mutex<Instant>) -> std::sync::MutexGuard<'_, Instant> {
    // An instant: a panic while it was held cannot have left it half-written.
    activity.lock().unwrap_or_else(|e| e.into_inner())
}

/// What applying a batch needs besides the batch.
struct BatchContext {
    activity: Arc<Mutex<Instant>>,
    ingestor: Arc<Ingestor>,
    events: EventSettings,
    tenants: Arc<HashSet<String>>,
    dead_letters: DeadLetters,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
}

impl BatchContext {
    /// The consumer is making progress (or trying to): not stalled.
    fn touch(&self) {
        *lock(&self.activity) = Instant::now();
    }
}

/// Applies one batch: every message is applied, or dead-lettered for a permanent reason.
/// `Err` is transient (the store or the dead-letter topic unavailable): the batch is to be
/// retried as a whole, and nothing of it committed; what was applied already is deduplicated
/// on the retry.
async fn apply_batch(cx: &BatchContext, batch: &[OwnedMessage]) -> Result<(), String> {
    let now = crate::domain::unix_now();
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    let mut by_tenant: BTreeMap<String, (Vec<usize>, Vec<ingest::ValidEvent>)> = BTreeMap::new();
    for (i, m) in batch.iter().enumerate() {
        let sorted = triage(m.payload(), cx.max_message_bytes, now, &cx.events, |t| {
            cx.tenants.contains(t)
        });
        match sorted {
            Ok((tenant, event)) => {
                let (indices, events) = by_tenant.entry(tenant).or_default();
                indices.push(i);
                events.push(event);
            }
            Err(reason) => rejected.push((i, reason)),
        }
    }
    // The ingestor counts its own rejections (unknown items); these are the consumer's.
    for reason in [
        Rejection::Unparseable,
        Rejection::TooLarge,
        Rejection::Invalid,
        Rejection::UnknownTenant,
    ] {
        EventsRejected {
            reason: reason.as_str(),
            count: rejected.iter().filter(|(_, r)| *r == reason).count(),
        }
        .emit(&cx.metrics);
    }
    for (tenant, (indices, events)) in by_tenant {
        match cx
            .ingestor
            .apply(&Arc::from(tenant.as_str()), events, Source::Kafka)
            .await
        {
            Ok(applied) => rejected.extend(
                applied
                    .unknown_item_indices
                    .iter()
                    .map(|&k| (indices[k], Rejection::UnknownItem))
                    .chain(
                        applied
                            .over_budget
                            .iter()
                            .map(|&k| (indices[k], Rejection::OverBudget)),
                    ),
            ),
            // Not an answer `apply` gives (a budget refuses events one by one, above), but
            // should it: kept for replay, like the events it does refuse.
            Err(StoreError::QuotaExceeded { .. }) => {
                rejected.extend(indices.iter().map(|&i| (i, Rejection::OverBudget)))
            }
            Err(e @ StoreError::Unavailable(_)) => return Err(e.to_string()),
            // Configured, but not in the store: as permanent as an unconfigured tenant.
            Err(StoreError::UnknownTenant(_)) => {
                rejected.extend(indices.iter().map(|&i| (i, Rejection::UnknownTenant)))
            }
        }
    }
    for (i, reason) in rejected {
        let m = &batch[i];
        let letter = DeadLetter {
            key: m.key(),
            payload: m.payload(),
            reason,
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
        };
        cx.dead_letters
            .send(&letter)
            .await
            .map_err(|e| format!("dead-letter topic {}: {e}", cx.dead_letters.topic()))?;
        EventsDeadLettered {
            reason: reason.as_str(),
        }
        .emit(&cx.metrics);
    }
    Ok(())
}

/// Applies `batch`, retrying transient failures with exponential backoff (100 ms doubling up to
/// `max_backoff`) until it goes through: the partition waits, its lag grows, nothing is lost
/// and the actor keeps running.
async fn apply_until_done(cx: &BatchContext, batch: &[OwnedMessage], max_backoff: Duration) {
    let mut backoff = RETRY_BACKOFF_START.min(max_backoff);
    let mut attempt = 1u64;
    while let Err(error) = apply_batch(cx, batch).await {
        KafkaBatchRetried {
            error: &error,
            attempt,
            backoff,
        }
        .emit(&cx.metrics);
        cx.touch();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
        attempt += 1;
    }
}

/// The offsets to commit after `batch`: one past the last message of each partition.
fn next_offsets(batch: &[OwnedMessage]) -> TopicPartitionList {
    let mut last: HashMap<(String, i32), i64> = HashMap::new();
    for m in batch {
        let e = last
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in last {
        let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1));
    }
    tpl
}

impl Lifecycle for KafkaConsumer {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.health
    }

    fn on_started(&mut self, ctx: &mut Context<Self>) {
        if self.reconnect_delay.is_zero() {
            self.consume(ctx);
        } else {
            ctx.run_later(self.reconnect_delay, |act, ctx| act.consume(ctx));
        }
        ctx.run_interval(self.kafka.lag_interval, Self::report_lag);
    }

    fn on_stopped(&mut self) {
        self.consumer = None;
    }

    fn on_restarting(&mut self) {
        self.consumer = None;
    }
}

supervised_actor!(KafkaConsumer, panics = async);

/// Pauses (true) or resumes (false) consumption of every assigned partition: an operator's
/// brake, and how the tests make lag build up.
#[derive(Message)]
#[rtype(result = "Result<(), FeedError>")]
pub struct Pause(pub bool);

impl Handler<Pause> for KafkaConsumer {
    type Result = Result<(), FeedError>;

    fn handle(&mut self, msg: Pause, _: &mut Context<Self>) -> Self::Result {
        let failure = |e: rdkafka::error::KafkaError| {
            FeedError::Store(crate::store::StoreError::Unavailable(e.to_string()))
        };
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let assigned = consumer.assignment().map_err(failure)?;
        self.paused = msg.0;
        *lock(&self.activity) = Instant::now();
        if msg.0 {
            consumer.pause(&assigned).map_err(failure)
        } else {
            consumer.resume(&assigned).map_err(failure)
        }
    }
}
