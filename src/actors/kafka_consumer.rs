//! `KafkaConsumer`: reads the event topic in a consumer group and applies batches through the
//! same `Ingestor` as the in-process path. Offsets are committed only after the batch they
//! cover was written (at-least-once; replays are harmless thanks to `event_id` dedup). If a
//! write fails, the actor stops: its supervisor restarts it, the new consumer rejoins the group
//! and resumes from the last committed offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt as _;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::lifecycle::{Lifecycle, supervised_actor};
use super::{ActorHealth, FeedError};
use crate::config::{EventSettings, KafkaSettings};
use crate::ingest::kafka::{EventMessage, client_config};
use crate::ingest::{self, Ingestor, Source};
use crate::telemetry::events::{EventsRejected, KafkaConsumerFailed, KafkaLagMeasured};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "kafka_consumer";

pub struct KafkaConsumer {
    kafka: KafkaSettings,
    events: EventSettings,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
    consumer: Option<Arc<StreamConsumer>>,
}

impl KafkaConsumer {
    pub fn new(
        kafka: KafkaSettings,
        events: EventSettings,
        ingestor: Arc<Ingestor>,
        metrics: Arc<Metrics>,
        health: Arc<ActorHealth>,
    ) -> Self {
        Self {
            kafka,
            events,
            ingestor,
            metrics,
            health,
            consumer: None,
        }
    }

    fn connect(&self) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
        let consumer: StreamConsumer = client_config(&self.kafka)
            .set("group.id", &self.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        consumer.subscribe(&[&self.kafka.topic])?;
        Ok(consumer)
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
        ctx.spawn(actix::fut::wrap_future::<_, Self>(lag).map(|lag, act, _| {
            if let Ok(Some(lag)) = lag {
                KafkaLagMeasured {
                    topic: &act.kafka.topic,
                    lag: &lag,
                }
                .emit(&act.metrics);
            }
        }));
    }
}

/// Applies one batch of messages: unparseable and invalid ones are counted and skipped (their
/// offsets are committed too: retrying them would never help); the rest are applied per tenant.
async fn apply_batch(
    ingestor: &Ingestor,
    events: &EventSettings,
    metrics: &Metrics,
    batch: &[OwnedMessage],
) -> Result<(), FeedError> {
    let now = crate::domain::unix_now();
    let mut by_tenant: BTreeMap<String, Vec<ingest::ValidEvent>> = BTreeMap::new();
    let (mut unparseable, mut invalid) = (0, 0);
    for m in batch {
        let parsed = m
            .payload()
            .and_then(|p| serde_json::from_slice::<EventMessage>(p).ok());
        let Some(msg) = parsed else {
            unparseable += 1;
            continue;
        };
        match ingest::validate_input(msg.event, now, events) {
            Ok(v) => by_tenant.entry(msg.tenant).or_default().push(v),
            Err(_) => invalid += 1,
        }
    }
    EventsRejected {
        reason: "unparseable",
        count: unparseable,
    }
    .emit(metrics);
    EventsRejected {
        reason: "invalid",
        count: invalid,
    }
    .emit(metrics);
    for (tenant, valid) in by_tenant {
        ingestor
            .apply(&Arc::from(tenant.as_str()), valid, Source::Kafka)
            .await?;
    }
    Ok(())
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
        let consumer = match self.connect() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                KafkaConsumerFailed { error: &e }.emit(&self.metrics);
                ctx.run_later(Duration::from_secs(1), |_, ctx| ctx.stop());
                return;
            }
        };
        self.consumer = Some(consumer.clone());
        let (ingestor, events, metrics) = (
            self.ingestor.clone(),
            self.events.clone(),
            self.metrics.clone(),
        );
        let max_batch = self.kafka.max_batch;
        let run = async move {
            loop {
                let first = consumer.recv().await.map_err(|e| e.to_string())?.detach();
                let mut batch = vec![first];
                // Whatever else arrives within 2 ms, up to a batch: writes are pipelined per
                // batch. Messages already queued are taken without a timer each.
                let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
                while batch.len() < max_batch {
                    let next = match consumer.recv().now_or_never() {
                        Some(next) => next,
                        None => match tokio::time::timeout_at(deadline, consumer.recv()).await {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    };
                    batch.push(next.map_err(|e| e.to_string())?.detach());
                }
                apply_batch(&ingestor, &events, &metrics, &batch)
                    .await
                    .map_err(|e| e.to_string())?;
                consumer
                    .commit(&next_offsets(&batch), CommitMode::Async)
                    .map_err(|e| e.to_string())?;
            }
        };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(run).map(
            |result: Result<(), String>, act, ctx| {
                if let Err(error) = result {
                    KafkaConsumerFailed { error: &error }.emit(&act.metrics);
                }
                // Stopping hands over to the supervisor: a fresh consumer resumes from the last
                // committed offset.
                ctx.stop();
            },
        ));
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
        if msg.0 {
            consumer.pause(&assigned).map_err(failure)
        } else {
            consumer.resume(&assigned).map_err(failure)
        }
    }
}
