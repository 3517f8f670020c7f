//! The Kafka path against librdkafka's mock cluster: a real Kafka protocol peer, in process
//! (no broker binary can be installed here).

use std::ffi::{CStr, CString};
use std::time::Duration;

use eaglerank::actors::{InjectPanic, Pause};
use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};

use crate::helpers::{RedisServer, TestApp, metric_sum, metric_value, spawn_app_with};

const TOPIC: &str = "eaglerank-events";

/// A 3-broker mock cluster, alive as long as this value.
struct MockKafka {
    _owner: BaseProducer,
    bootstrap: String,
    producer: FutureProducer,
}

impl MockKafka {
    /// Takes every broker down (`true`) or brings them back: the broker outage of a real
    /// deployment, as librdkafka's mock cluster plays it.
    fn set_down(&self, down: bool) {
        // SAFETY: the handle belongs to `_owner`, alive as long as `self`.
        unsafe {
            let cluster = rdsys::rd_kafka_handle_mock_cluster(self._owner.client().native_ptr());
            assert!(!cluster.is_null());
            for broker in 1..=3 {
                let err = if down {
                    rdsys::rd_kafka_mock_broker_set_down(cluster, broker)
                } else {
                    rdsys::rd_kafka_mock_broker_set_up(cluster, broker)
                };
                assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            }
        }
    }
}

fn mock_kafka(partitions: i32) -> MockKafka {
    let owner: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "3")
        .create()
        .expect("mock cluster");
    // SAFETY: the handle belongs to `owner`, which outlives every use here.
    let bootstrap = unsafe {
        let cluster = rdsys::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        assert!(!cluster.is_null());
        // The first consumer-group join otherwise waits 3 s.
        rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        let topic = CString::new(TOPIC).unwrap();
        assert_eq!(
            rdsys::rd_kafka_mock_topic_create(cluster, topic.as_ptr(), partitions, 1),
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster))
            .to_string_lossy()
            .into_owned()
    };
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    MockKafka {
        _owner: owner,
        bootstrap,
        producer,
    }
}

/// The settings that point a service at `kafka`.
fn kafka_overrides(kafka: &MockKafka) -> Vec<(&'static str, config::Value)> {
    vec![
        ("kafka.brokers", kafka.bootstrap.clone().into()),
        ("kafka.lag_interval_ms", 100.into()),
        // A restarted consumer rejoins quickly even if the old member's leave went unseen.
        (
            "kafka.properties",
            std::collections::HashMap::from([
                ("session.timeout.ms".to_string(), "6000".to_string()),
                ("heartbeat.interval.ms".to_string(), "500".to_string()),
            ])
            .into(),
        ),
    ]
}

async fn app_on(kafka: &MockKafka) -> TestApp {
    spawn_app_with(&kafka_overrides(kafka)).await
}

fn message(id: &str, user: &str, item: &str) -> Value {
    json!({"tenant": "demo-a", "event": {"event_id": id, "type": "click", "user_id": user,
           "item_id": item, "timestamp": eaglerank::ingest::now_rfc3339()}})
}

async fn produce(kafka: &MockKafka, key: &str, payload: &[u8]) {
    kafka
        .producer
        .send(
            FutureRecord::to(TOPIC).key(key).payload(payload),
            Duration::from_secs(5),
        )
        .await
        .expect("delivered");
}

const INGESTED: &str =
    r#"eaglerank_events_ingested_total{source="kafka",tenant="demo-a",type="click"}"#;

/// One click per user `u<i>`, event id `r<i>`, for each i in `range`.
async fn produce_clicks(kafka: &MockKafka, range: std::ops::Range<usize>) {
    for i in range {
        let msg = message(&format!("r{i}"), &format!("u{i}"), "i3").to_string();
        produce(kafka, &format!("demo-a:u{i}"), msg.as_bytes()).await;
    }
}

async fn ingested(app: &TestApp) -> f64 {
    metric_value(&app.metrics().await, INGESTED).unwrap_or(0.0)
}

/// Waits until `n` clicks came in through Kafka.
async fn wait_ingested(app: &TestApp, n: f64) {
    wait_metric(app, &format!("{n} events from kafka"), |m| {
        metric_value(m, INGESTED) == Some(n)
    })
    .await;
}

async fn wait_metric(app: &TestApp, what: &str, ok: impl Fn(&str) -> bool) {
    for _ in 0..1500 {
        if ok(&app.metrics().await) {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}:\n{}", app.metrics().await);
}

#[actix_rt::test]
async fn events_posted_to_the_api_travel_through_kafka_into_the_features() {
    let kafka = mock_kafka(2);
    let app = app_on(&kafka).await;
    let events: Vec<Value> = (0..8)
        .map(|i| {
            json!({"event_id": format!("k{i}"), "type": "click", "user_id": "u5",
                        "item_id": format!("i{i}"), "timestamp": eaglerank::ingest::now_rfc3339()})
        })
        .collect();
    let res = app.post_events(&json!(events)).await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 8);
    wait_ingested(&app, 8.0).await;
    let m = app.metrics().await;
    assert!(
        !m.contains(r#"source="http""#),
        "the API produced, it did not apply"
    );
    assert!(metric_value(&m, "eaglerank_feature_freshness_seconds_count").unwrap() >= 8.0);
}

#[actix_rt::test]
async fn an_unparseable_message_is_counted_and_skipped() {
    let kafka = mock_kafka(1);
    let app = app_on(&kafka).await;
    produce(&kafka, "demo-a:u1", b"{not json").await;
    produce(
        &kafka,
        "demo-a:u1",
        message("ok-1", "u1", "i1").to_string().as_bytes(),
    )
    .await;
    wait_ingested(&app, 1.0).await;
    let m = app.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_events_rejected_total{reason="unparseable"}"#
        ),
        Some(1.0)
    );
    let health = app.actors.health.snapshot();
    let consumer = health.iter().find(|a| a.name == "kafka_consumer").unwrap();
    assert!(consumer.up && consumer.restarts == 0, "{consumer:?}");
}

#[actix_rt::test]
async fn a_restarted_consumer_resumes_from_the_committed_offset_and_loses_nothing() {
    let kafka = mock_kafka(2);
    let app = app_on(&kafka).await;
    produce_clicks(&kafka, 0..50).await;
    wait_ingested(&app, 50.0).await;
    let consumer = app.actors.kafka_consumer.clone().unwrap();
    let _ = consumer.send(InjectPanic).await.unwrap();
    produce_clicks(&kafka, 50..100).await;
    wait_ingested(&app, 100.0).await;
    let m = app.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_actor_restarts_total{actor="kafka_consumer"}"#
        ),
        Some(1.0)
    );
    // Nothing applied twice either: every replay was caught by its event_id.
    let duplicates =
        metric_value(&m, r#"eaglerank_events_duplicates_total{tenant="demo-a"}"#).unwrap();
    assert_eq!(ingested(&app).await, 100.0, "duplicates seen: {duplicates}");
}

#[actix_rt::test]
async fn lag_rises_while_paused_and_falls_to_zero_after() {
    let kafka = mock_kafka(1);
    let app = app_on(&kafka).await;
    produce(
        &kafka,
        "demo-a:u1",
        message("warm", "u1", "i1").to_string().as_bytes(),
    )
    .await;
    wait_metric(&app, "the assignment", |m| {
        metric_value(m, "eaglerank_kafka_assigned_partitions") == Some(1.0)
            && metric_value(
                m,
                r#"eaglerank_kafka_consumer_lag{partition="0",topic="eaglerank-events"}"#,
            ) == Some(0.0)
    })
    .await;
    let consumer = app.actors.kafka_consumer.clone().unwrap();
    consumer.send(Pause(true)).await.unwrap().unwrap();
    for i in 0..20 {
        produce(
            &kafka,
            "demo-a:u2",
            message(&format!("p{i}"), "u2", "i2").to_string().as_bytes(),
        )
        .await;
    }
    wait_metric(&app, "lag 20", |m| {
        metric_value(
            m,
            r#"eaglerank_kafka_consumer_lag{partition="0",topic="eaglerank-events"}"#,
        ) == Some(20.0)
    })
    .await;
    consumer.send(Pause(false)).await.unwrap().unwrap();
    wait_metric(&app, "lag 0", |m| {
        metric_value(
            m,
            r#"eaglerank_kafka_consumer_lag{partition="0",topic="eaglerank-events"}"#,
        ) == Some(0.0)
    })
    .await;
    assert_eq!(ingested(&app).await, 21.0);
}

/// The first `n` messages of the dead-letter topic (in no particular order: it may have
/// several partitions).
async fn dead_letters(kafka: &MockKafka, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", "dead-letter-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&format!("{TOPIC}.dlq")])
        .expect("subscribed");
    let mut out = Vec::new();
    while out.len() < n {
        let message = actix_rt::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a dead letter arrives")
            .expect("readable");
        out.push(message.detach());
    }
    out
}

#[actix_rt::test]
async fn a_poison_message_is_dead_lettered_and_never_blocks_its_partition() {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;

    let kafka = mock_kafka(1);
    let app = app_on(&kafka).await;
    // Well-formed, but for a tenant this service does not have, and first in its partition:
    // it used to fail the batch, restart the consumer, and be read again, forever.
    let poison = json!({"tenant": "no-such-shop", "event": {"event_id": "x1", "type": "click",
        "user_id": "u1", "item_id": "i1", "timestamp": eaglerank::ingest::now_rfc3339()}})
    .to_string();
    produce(&kafka, "no-such-shop:u1", poison.as_bytes()).await;
    // And one on an item the catalog does not have.
    let unknown_item = message("x2", "u1", "no-such-item").to_string();
    produce(&kafka, "demo-a:u1", unknown_item.as_bytes()).await;
    produce_clicks(&kafka, 0..20).await;
    wait_ingested(&app, 20.0).await;
    wait_metric(&app, "two dead letters", |m| {
        metric_value(
            m,
            r#"eaglerank_events_dead_lettered_total{reason="unknown_tenant"}"#,
        ) == Some(1.0)
            && metric_value(
                m,
                r#"eaglerank_events_dead_lettered_total{reason="unknown_item"}"#,
            ) == Some(1.0)
    })
    .await;
    let m = app.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_events_rejected_total{reason="unknown_tenant"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            r#"eaglerank_events_dead_lettered_total{reason="invalid"}"#
        ),
        Some(0.0),
        "every reason is exported from the start"
    );
    let health = app.actors.health.snapshot();
    let consumer = health.iter().find(|a| a.name == "kafka_consumer").unwrap();
    assert!(consumer.up && consumer.restarts == 0, "{consumer:?}");

    // A dead letter is the original message, with why and where from in its headers.
    let header = |letter: &rdkafka::message::OwnedMessage, name: &str| {
        letter
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let letters = dead_letters(&kafka, 2).await;
    let reasons: Vec<Option<String>> = letters
        .iter()
        .map(|l| header(l, "eaglerank-reason"))
        .collect();
    let letter = letters
        .iter()
        .find(|l| header(l, "eaglerank-reason").as_deref() == Some("unknown_tenant"))
        .unwrap_or_else(|| panic!("no unknown_tenant letter: {reasons:?}"));
    assert_eq!(letter.payload(), Some(poison.as_bytes()));
    assert_eq!(letter.key(), Some(&b"no-such-shop:u1"[..]));
    assert_eq!(
        header(letter, "eaglerank-source-topic").as_deref(),
        Some(TOPIC)
    );
    assert_eq!(
        header(letter, "eaglerank-source-partition").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(letter, "eaglerank-source-offset").as_deref(),
        Some("0")
    );
    let item = letters
        .iter()
        .find(|l| header(l, "eaglerank-reason").as_deref() == Some("unknown_item"))
        .unwrap_or_else(|| panic!("no unknown_item letter: {reasons:?}"));
    assert_eq!(item.payload(), Some(unknown_item.as_bytes()));
    assert_eq!(
        header(item, "eaglerank-source-offset").as_deref(),
        Some("1")
    );
}

#[actix_rt::test]
async fn a_batch_the_store_cannot_take_is_retried_in_place_and_nothing_is_lost() {
    let kafka = mock_kafka(1);
    let mut redis = RedisServer::start();
    crate::redis::load_demo(&redis).await;
    let app = crate::redis::spawn_redis_app_with(&redis, &kafka_overrides(&kafka)).await;
    produce_clicks(&kafka, 0..5).await;
    wait_ingested(&app, 5.0).await;

    redis.kill();
    produce_clicks(&kafka, 5..25).await;
    wait_metric(&app, "batch retries", |m| {
        metric_value(m, "eaglerank_kafka_batch_retries_total") >= Some(2.0)
    })
    .await;
    // Waiting, not failing: no event is dead-lettered for a store that is down.
    let m = app.metrics().await;
    assert_eq!(
        metric_sum(&m, "eaglerank_events_dead_lettered_total", &[]),
        0.0
    );

    redis.restart();
    wait_ingested(&app, 25.0).await;
    let health = app.actors.health.snapshot();
    let consumer = health.iter().find(|a| a.name == "kafka_consumer").unwrap();
    assert!(consumer.up && consumer.restarts == 0, "{consumer:?}");
}

#[actix_rt::test]
async fn with_the_broker_down_posting_events_answers_503_and_nothing_accepted_is_lost() {
    let kafka = mock_kafka(1);
    let mut overrides = kafka_overrides(&kafka);
    overrides.push(("kafka.produce_timeout_ms", 1000.into()));
    let app = spawn_app_with(&overrides).await;
    let event = |id: &str| {
        json!([{"event_id": id, "type": "click", "user_id": "u9", "item_id": "i9",
                "timestamp": eaglerank::ingest::now_rfc3339()}])
    };
    assert_eq!(app.post_events(&event("before-1")).await.status(), 202);
    wait_ingested(&app, 1.0).await;

    kafka.set_down(true);
    // Not acknowledged within kafka.produce_timeout_ms: refused, in the one error shape.
    let res = app.post_events(&event("during-1")).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    kafka.set_down(false);
    // Accepted again once the brokers are back (the client retries, as a 503 tells it to).
    let mut accepted = false;
    for _ in 0..60 {
        if app.post_events(&event("after-1")).await.status() == 202 {
            accepted = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted, "the API accepts events again after the outage");
    // Everything that got a 202 is applied.
    wait_metric(&app, "the accepted events", |m| {
        metric_value(m, INGESTED) >= Some(2.0)
    })
    .await;
}
