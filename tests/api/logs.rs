//! The real binary's stdout: one JSON object per line, one `FeedServed` line per feed.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{DEMO_A_KEY, spawn_binary};

#[actix_rt::test]
async fn one_json_line_per_served_feed_with_the_documented_fields() {
    let bin = spawn_binary(&[]);
    for user in ["u42", "newcomer-1"] {
        let res = bin.feed(&format!("user_id={user}&limit=7")).await;
        assert_eq!(res.status(), 200);
    }
    let logs = bin.drain_logs(Duration::from_millis(500));
    let served: Vec<&Value> = logs.iter().filter(|l| l["event"] == "FeedServed").collect();
    assert_eq!(served.len(), 2, "{logs:#?}");
    for (line, user) in served.iter().zip(["u42", "newcomer-1"]) {
        let ts = line["ts"].as_str().expect("ts");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .expect("ts is RFC 3339");
        assert!(ts.ends_with('Z'), "UTC: {ts}");
        assert_eq!(line["level"], "info");
        assert_eq!(line["service"], "eaglerank");
        assert_eq!(line["tenant"], "demo-a");
        assert_eq!(line["user"], user);
        assert_eq!(line["num_items"], 7);
        assert!(line["latency_ms"].as_f64().is_some_and(|v| v > 0.0));
        assert!(line["request_id"].as_str().is_some_and(|v| !v.is_empty()));
    }
    let all = logs.iter().map(|l| l.to_string()).collect::<String>();
    assert!(!all.contains(DEMO_A_KEY), "API keys are never logged");
}

#[actix_rt::test]
async fn failed_feeds_are_logged_with_their_code_and_cause() {
    let bin = spawn_binary(&[("EAGLERANK__SERVER__REQUEST_DEADLINE_MS", "1")]);
    let mut unavailable = 0;
    for _ in 0..5 {
        let res = bin.feed("user_id=u42&limit=100").await;
        unavailable += usize::from(res.status() == 503);
    }
    assert!(unavailable > 0);
    let logs = bin.drain_logs(Duration::from_millis(500));
    let failed: Vec<&Value> = logs.iter().filter(|l| l["event"] == "FeedFailed").collect();
    assert_eq!(failed.len(), unavailable, "{logs:#?}");
    assert_eq!(failed[0]["level"], "warn");
    assert_eq!(failed[0]["code"], "deadline_exceeded");
    assert_eq!(failed[0]["transport"], "http");
    assert!(failed[0]["error"].as_str().unwrap().contains("deadline"));
}
