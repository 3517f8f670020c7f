//! Kafka as the event stream: the wire format of an event message, and the producer the REST
//! endpoint uses when `kafka.brokers` is set. Messages are keyed by `tenant:user_id`, so that
//! one user's events land on one partition, in order.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::config::KafkaSettings;
use crate::ingest::EventInput;

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

/// The librdkafka settings shared by producer and consumer, plus any `[kafka.properties]`.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (k, v) in &settings.properties {
        config.set(k, v);
    }
    config
}

pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let producer = client_config(settings)
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                settings.produce_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            producer,
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
