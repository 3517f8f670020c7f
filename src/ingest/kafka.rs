//! Kafka as the event stream: the wire format of an event message, the producer the REST
//! endpoint uses when `kafka.brokers` is set, how the consumer sorts a message (applicable, or
//! rejected for good), and the dead-letter topic rejected messages go to. Messages are keyed by
//! `tenant:user_id`, so that one user's events land on one partition, in order.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::config::{EventSettings, KafkaSettings};
use crate::domain::UnixSeconds;
use crate::ingest::{EventInput, ValidEvent, validate_input};

/// One message: an event of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub tenant: String,
    pub event: EventInput,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka: {0}")]
    Encode(#[from] serde_json::Error),
}

pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

/// A producer whose sends complete once the brokers acknowledged them (idempotent), or fail
/// after `kafka.produce_timeout_ms`.
fn acknowledged_producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    Ok(settings
        .client_config()
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            settings.produce_timeout.as_millis().to_string(),
        )
        .create()?)
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: acknowledged_producer(settings)?,
            topic: settings.topic.clone(),
            timeout: settings.produce_timeout,
        })
    }

    /// Produces every event and waits until the broker acknowledged all of them: a 202 means
    /// the batch is durable in Kafka.
    pub async fn send(&self, tenant: &str, events: &[EventInput]) -> Result<(), KafkaError> {
        let messages = events
            .iter()
            .map(|event| {
                let payload = serde_json::to_vec(&EventMessage {
                    tenant: tenant.to_owned(),
                    event: event.clone(),
                })?;
                Ok((format!("{tenant}:{}", event.user_id), payload))
            })
            .collect::<Result<Vec<_>, KafkaError>>()?;
        let deliveries = messages.iter().map(|(key, payload)| {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            self.producer.send(record, self.timeout)
        });
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| e)?;
        }
        Ok(())
    }
}

/// Why a message can never be applied, however often it is retried: it is counted, sent to the
/// dead-letter topic and committed, so that it never blocks its partition. (A store that is
/// down is not a rejection: the batch is retried.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not an event message (JSON of the wrong shape, or no payload).
    Unparseable,
    /// Larger than `kafka.max_message_bytes`: not even parsed.
    TooLarge,
    /// Parsed, but fails the event rules (ids, timestamp) the REST API enforces with a 400.
    Invalid,
    /// For a tenant this service does not have.
    UnknownTenant,
    /// On an item the store does not know.
    UnknownItem,
    /// From a user the store does not know, past the tenant's `users` budget: kept in the
    /// dead-letter topic for replay once the budget allows.
    OverBudget,
}

impl Rejection {
    pub const ALL: [Rejection; 6] = [
        Rejection::Unparseable,
        Rejection::TooLarge,
        Rejection::Invalid,
        Rejection::UnknownTenant,
        Rejection::UnknownItem,
        Rejection::OverBudget,
    ];

    /// The `reason` label and dead-letter header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unparseable => "unparseable",
            Rejection::TooLarge => "too_large",
            Rejection::Invalid => "invalid",
            Rejection::UnknownTenant => "unknown_tenant",
            Rejection::UnknownItem => "unknown_item",
            Rejection::OverBudget => "quota_exceeded",
        }
    }
}

/// Sorts one message's payload: its tenant and validated event, or why it can never apply.
pub fn triage(
    payload: Option<&[u8]>,
    max_bytes: usize,
    now: UnixSeconds,
    events: &EventSettings,
    is_tenant: impl Fn(&str) -> bool,
) -> Result<(String, ValidEvent), Rejection> {
    let payload = payload.ok_or(Rejection::Unparseable)?;
    if payload.len() > max_bytes {
        return Err(Rejection::TooLarge);
    }
    let message: EventMessage =
        serde_json::from_slice(payload).map_err(|_| Rejection::Unparseable)?;
    if !is_tenant(&message.tenant) {
        return Err(Rejection::UnknownTenant);
    }
    let event = validate_input(message.event, now, events).map_err(|_| Rejection::Invalid)?;
    Ok((message.tenant, event))
}

/// A rejected message, as it goes to the dead-letter topic: the original key and payload,
/// and where it came from.
pub struct DeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub reason: Rejection,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The headers a dead letter carries (the payload is the original, byte for byte).
pub const HEADER_REASON: &str = "eaglerank-reason";
pub const HEADER_TOPIC: &str = "eaglerank-source-topic";
pub const HEADER_PARTITION: &str = "eaglerank-source-partition";
pub const HEADER_OFFSET: &str = "eaglerank-source-offset";

/// The producer of the dead-letter topic (`kafka.dead_letter_topic`, `<topic>.dlq` by default).
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl DeadLetters {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: acknowledged_producer(settings)?,
            topic: settings.dead_letter_topic(),
            timeout: settings.produce_timeout,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `letter` and waits for the broker's acknowledgement: only then may the
    /// original's offset be committed.
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<(), KafkaError> {
        let (partition, offset) = (letter.partition.to_string(), letter.offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(letter.reason.as_str()),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(letter.topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, self.timeout)
            .await
            .map_err(|(e, _)| KafkaError::Client(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> EventSettings {
        EventSettings {
            dedup_window: Duration::from_secs(60),
            dedup_capacity: 10,
            max_future_skew: Duration::from_secs(300),
            max_batch: 10,
            join_window: Duration::from_secs(60),
            join_capacity: 10,
            feed_log_flush: Duration::ZERO,
        }
    }

    fn sort(payload: &[u8]) -> Result<String, Rejection> {
        let now = crate::domain::unix_now();
        triage(Some(payload), 512, now, &events(), |t| t == "shop").map(|(t, _)| t)
    }

    #[test]
    fn triage_tells_each_permanent_failure_apart() {
        let event = |tenant: &str, item: &str| {
            serde_json::json!({"tenant": tenant, "event": {"event_id": "e1", "type": "click",
                "user_id": "u1", "item_id": item, "timestamp": "2026-01-01T00:00:00Z"}})
            .to_string()
        };
        assert_eq!(sort(event("shop", "i1").as_bytes()), Ok("shop".to_owned()));
        assert_eq!(sort(b"{not json"), Err(Rejection::Unparseable));
        assert_eq!(sort(b"{\"tenant\": \"shop\"}"), Err(Rejection::Unparseable));
        assert_eq!(
            sort(event("elsewhere", "i1").as_bytes()),
            Err(Rejection::UnknownTenant)
        );
        assert_eq!(
            sort(event("shop", "no spaces").as_bytes()),
            Err(Rejection::Invalid)
        );
        assert_eq!(
            sort(event("shop", &"i".repeat(600)).as_bytes()),
            Err(Rejection::TooLarge)
        );
        let now = crate::domain::unix_now();
        assert_eq!(
            triage(None, 512, now, &events(), |_| true).map(|(t, _)| t),
            Err(Rejection::Unparseable)
        );
    }
}
