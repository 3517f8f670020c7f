//! The learning loop through the API: served feeds logged with the exact features the model
//! ranked them with, outcomes joined into a training set by `eaglerank dataset export`, and
//! experiments (stable arms, per-arm counters, the report, a reload that stops one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    DEMO_A_KEY, TestApp, cli, metric_value, spawn_app_with, spawn_app_with_files,
};

const ADMIN_KEY: &str = "er_admin_demo_Wq4Zt8Kp2Nx6";

/// Records in the log's files so far.
fn logged(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Waits until the writer has flushed `n` records of `kind`.
async fn wait_logged(dir: &Path, kind: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let records = logged(dir);
        if records.iter().filter(|r| r["kind"] == kind).count() >= n {
            return records;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} {kind} records after 10 s, expected {n}",
            records.iter().filter(|r| r["kind"] == kind).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn feed(app: &TestApp, user: &str, explain: bool) -> Value {
    let res = app
        .feed(
            "demo-a",
            DEMO_A_KEY,
            &format!("user_id={user}&explain={explain}"),
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn event(feed: &Value, position: usize, kind: &str, n: usize) -> Value {
    json!({
        "event_id": format!("{}-{kind}-{position}-{n}", feed["request_id"].as_str().unwrap()),
        "type": kind,
        "user_id": feed["user_id"],
        "item_id": feed["items"][position]["item_id"],
        "timestamp": eaglerank::ingest::now_rfc3339(),
        "request_id": feed["request_id"],
    })
}

#[actix_rt::test]
async fn served_features_and_outcomes_become_a_labelled_training_set() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let app = spawn_app_with(&[
        ("feature_log.sample_rate", 1.0.into()),
        ("feature_log.dir", dir_s.clone().into()),
    ])
    .await;
    let mut feeds = Vec::new();
    for u in 0..4 {
        feeds.push(feed(&app, &format!("u{u}"), true).await);
    }
    // Outcomes: u0 clicks 0, u1 carts 1 (after a click), u2 buys 2 (click, cart, purchase);
    // u3 only sees its feed.
    let mut events = Vec::new();
    for (f, feed) in feeds.iter().enumerate() {
        for p in 0..feed["items"].as_array().unwrap().len() {
            events.push(event(feed, p, "impression", 0));
        }
        let kinds: &[&str] = match f {
            0 => &["click"],
            1 => &["click", "add_to_cart"],
            2 => &["click", "add_to_cart", "purchase"],
            _ => &[],
        };
        for (n, kind) in kinds.iter().enumerate() {
            events.push(event(feed, f, kind, n));
        }
    }
    let res = app.post_events(&json!(events)).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());

    let records = wait_logged(dir.path(), "outcome", events.len()).await;
    let logged_feeds: Vec<&Value> = records.iter().filter(|r| r["kind"] == "feed").collect();
    assert_eq!(logged_feeds.len(), 4);
    // Each logged item carries exactly the features the model ranked it with (what explain
    // shows, by the model's names) and the model's score.
    for (served, logged) in feeds.iter().zip(&logged_feeds) {
        assert_eq!(logged["request_id"], served["request_id"]);
        assert_eq!(logged["model"], served["model"]["name"]);
        assert_eq!(logged["experiment"], Value::Null);
        let names: Vec<&str> = logged["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for (item, row) in served["items"]
            .as_array()
            .unwrap()
            .iter()
            .zip(logged["items"].as_array().unwrap())
        {
            assert_eq!(row["item_id"], item["item_id"]);
            assert_eq!(
                row["position"].as_u64().unwrap() + 1,
                item["rank"].as_u64().unwrap()
            );
            assert_eq!(row["score"], item["model_score"]);
            let by_name: Vec<&Value> = names.iter().map(|n| &item["features"][n]).collect();
            let vector: Vec<&Value> = row["features"].as_array().unwrap().iter().collect();
            assert_eq!(vector, by_name, "the logged vector is the served one");
        }
    }
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"eaglerank_feature_log_records_total{kind="feed"}"#
        ),
        Some(4.0)
    );

    // The export joins them: one row per shown item, graded labels.
    let out = dir.path().join("train.jsonl");
    let run = cli(
        &["dataset", "export", "--out", out.to_str().unwrap()],
        &[("EAGLERANK__FEATURE_LOG__DIR", &dir_s)],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    let items: u64 = feeds
        .iter()
        .map(|f| f["items"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(summary["requests"], 4);
    assert_eq!(summary["rows"], items);
    assert_eq!(
        summary["labels"],
        json!({"none": items - 3, "click": 1, "add_to_cart": 1, "purchase": 1})
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let schema: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(schema["features"], logged_feeds[0]["features"]);
    let rows: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let label = |f: usize, p: usize| {
        rows.iter()
            .find(|r| r["request"] == feeds[f]["request_id"] && r["position"] == p)
            .unwrap()["label"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((label(0, 0), label(1, 1), label(2, 2)), (1, 2, 3));
    assert_eq!((label(0, 1), label(3, 3)), (0, 0));

    // A range with no feed, an empty log, a corrupt log: errors that say so, non-zero exits.
    let run = cli(
        &[
            "dataset",
            "export",
            "--out",
            out.to_str().unwrap(),
            "--since",
            "2100-01-01T00:00:00Z",
        ],
        &[("EAGLERANK__FEATURE_LOG__DIR", &dir_s)],
    );
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no logged feed"));
    let empty = tempfile::tempdir().unwrap();
    let run = cli(
        &["dataset", "export", "--out", out.to_str().unwrap()],
        &[(
            "EAGLERANK__FEATURE_LOG__DIR",
            empty.path().to_str().unwrap(),
        )],
    );
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no served-feature log"));
    let bad = empty.path().join("feature-log-0000000000001-1-1.jsonl");
    std::fs::write(&bad, "{\"kind\":\"feed\"}\n").unwrap();
    let run = cli(
        &["dataset", "export", "--out", out.to_str().unwrap()],
        &[(
            "EAGLERANK__FEATURE_LOG__DIR",
            empty.path().to_str().unwrap(),
        )],
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("feature-log-0000000000001-1-1.jsonl:1"),
        "{stderr}"
    );
}

#[actix_rt::test]
async fn a_sampled_share_of_feeds_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(&[
        ("feature_log.sample_rate", 0.25.into()),
        ("feature_log.dir", dir.path().to_str().unwrap().into()),
    ])
    .await;
    for u in 0..200 {
        feed(&app, &format!("u{}", u % 50), false).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let n = logged(dir.path()).len();
    // Binomial(200, 0.25): mean 50, sd 6.1.
    assert!((25..=75).contains(&n), "{n} of 200 feeds logged at 0.25");
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"eaglerank_feature_log_records_total{kind="feed"}"#
        ),
        Some(n as f64)
    );
}

fn experiment_config(dir: &Path, experiment: &str) -> PathBuf {
    let path = dir.join("experiment.toml");
    std::fs::write(
        &path,
        format!(
            "[models.linear]\npath = \"models/ranker-linear.onnx\"\nmetadata = \"models/ranker-linear.json\"\n{experiment}"
        ),
    )
    .unwrap();
    path
}

const SPLIT: &str = r#"
[tenants.demo-a.experiment]
name = "linear-vs-gbdt"
arms = [{ name = "control", model = "default", share = 0.5 },
        { name = "linear", model = "linear", share = 0.5 }]
"#;

#[actix_rt::test]
async fn an_experiment_splits_users_counts_each_arm_and_stops_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment_config(dir.path(), SPLIT);
    let app = spawn_app_with_files(std::slice::from_ref(&config), &[]).await;
    let mut arms: std::collections::HashMap<String, (u64, u64)> = Default::default();
    let mut events = Vec::new();
    for u in 0..120 {
        let user = format!("u{u}");
        let f = feed(&app, &user, false).await;
        assert_eq!(f["experiment"], "linear-vs-gbdt");
        let arm = f["arm"].as_str().unwrap().to_owned();
        // The arm's model ranked it.
        let expected = if arm == "linear" {
            "eaglerank-linear"
        } else {
            "eaglerank-lgbm-lambdarank"
        };
        assert_eq!(f["model"]["name"], expected, "{arm}");
        // The same user, the same arm.
        assert_eq!(feed(&app, &user, false).await["arm"], f["arm"]);
        let a = arms.entry(arm).or_default();
        a.0 += 2;
        // Every third user clicks the item at rank 3 (and buys it).
        if u % 3 == 0 {
            events.push(event(&f, 2, "click", 0));
            events.push(event(&f, 2, "purchase", 1));
            a.1 += 1;
        }
    }
    assert_eq!(arms.len(), 2, "{arms:?}");
    assert!(
        arms.values().all(|(feeds, _)| (80..=160).contains(feeds)),
        "{arms:?}"
    );
    let res = app.post_events(&json!(events)).await;
    assert_eq!(res.status(), 202);

    // The counters per arm, as the admin endpoint (and the report) read them.
    let view: Value = app
        .client
        .get(app.url("/v1/admin/experiments?tenant=demo-a"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for arm in view[0]["arms"].as_array().unwrap() {
        let (feeds, clicks) = arms[arm["arm"].as_str().unwrap()];
        assert_eq!(arm["feeds"], feeds, "{arm}");
        assert_eq!(arm["clicks_at_10"], clicks, "{arm}");
        assert_eq!(arm["purchases"], clicks, "{arm}");
        let rr = arm["reciprocal_rank"].as_f64().unwrap();
        assert!((rr - clicks as f64 / 3.0).abs() < 1e-9, "{arm}");
    }
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"eaglerank_experiment_arm_share{arm="control",experiment="linear-vs-gbdt",role="control",tenant="demo-a"}"#
        ),
        Some(0.5)
    );
    // The report reads them from the running service.
    let run = cli(
        &[
            "experiment",
            "report",
            "--tenant",
            "demo-a",
            "--url",
            &app.address,
        ],
        &[("EAGLERANK_ADMIN_KEY", ADMIN_KEY)],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(
        table.contains("arm \"control\"") && table.contains("arm \"linear\""),
        "{table}"
    );
    assert!(
        table.contains("CTR@10") && table.contains("(control)"),
        "{table}"
    );

    // An invalid change is refused and nothing changes.
    let bad = SPLIT.replace("share = 0.5 }]", "share = 0.4 }]");
    experiment_config(dir.path(), &bad);
    let reload = |key: &'static str| {
        app.client
            .post(app.url("/v1/admin/config/reload"))
            .bearer_auth(key)
            .send()
    };
    let res = reload(ADMIN_KEY).await.unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "config_rejected");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenants.demo-a.experiment.arms"),
        "{body}"
    );
    assert_eq!(
        feed(&app, "u1", false).await["experiment"],
        "linear-vs-gbdt"
    );
    assert_eq!(reload(DEMO_A_KEY).await.unwrap().status(), 403);

    // Stopped by a reload: no arm any more, the default model for everyone.
    experiment_config(dir.path(), "");
    let res = reload(ADMIN_KEY).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["experiments"],
        json!([{"tenant": "demo-a", "before": "linear-vs-gbdt", "after": null}])
    );
    for u in 0..20 {
        let f = feed(&app, &format!("u{u}"), false).await;
        assert_eq!((&f["experiment"], &f["arm"]), (&Value::Null, &Value::Null));
        assert_eq!(f["model"]["name"], "eaglerank-lgbm-lambdarank");
    }
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("eaglerank_experiment_arm_share{"),
        "shares removed"
    );
}

#[test]
fn an_invalid_experiment_refuses_to_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, field) in [
        (
            SPLIT.replace("share = 0.5 }]", "share = 0.4 }]"),
            "tenants.demo-a.experiment.arms",
        ),
        (
            SPLIT.replace("model = \"linear\"", "model = \"nope\""),
            "arms[1].model",
        ),
        (
            SPLIT.replace("name = \"linear\"", "name = \"control\""),
            "arms[1].name",
        ),
    ] {
        let config = experiment_config(dir.path(), &bad);
        let err = eaglerank::config::Settings::load(&[config])
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

fn drive_args(app: &TestApp, seed: u64, requests: usize) -> eaglerank::tools::drive::DriveArgs {
    eaglerank::tools::drive::DriveArgs {
        url: app.address.clone(),
        key: DEMO_A_KEY.to_owned(),
        tenant: "demo-a".into(),
        requests,
        limit: 20,
        seed,
        shift: true,
        users: 0,
    }
}

/// The whole loop on the demo, as the README walks it: users whose preferences shifted are
/// served with feature logging on → `dataset export` → `training/train.py` on it → the new
/// model as the second arm of an experiment → the users again → `experiment report` shows both
/// arms. Needs the training packages (`scripts/setup` installs them).
#[actix_rt::test]
async fn the_learning_loop_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let settings = eaglerank::config::Settings::load_with(
        &[],
        &[
            ("store.demo.items", 1500.into()),
            ("store.demo.users", 300.into()),
        ],
    )
    .unwrap();
    let app = spawn_app_with(&[
        ("feature_log.sample_rate", 1.0.into()),
        ("feature_log.dir", dir_s.clone().into()),
    ])
    .await;
    let logged_run = eaglerank::tools::drive::run(&settings, &drive_args(&app, 1, 600))
        .await
        .unwrap();
    wait_logged(dir.path(), "feed", 600).await;

    let data = dir.path().join("live.jsonl");
    let run = cli(
        &["dataset", "export", "--out", data.to_str().unwrap()],
        &[("EAGLERANK__FEATURE_LOG__DIR", &dir_s)],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["requests"], 600);
    assert_eq!(
        summary["labels"]["click"].as_u64().unwrap()
            + summary["labels"]["add_to_cart"].as_u64().unwrap()
            + summary["labels"]["purchase"].as_u64().unwrap(),
        logged_run.clicks as u64,
        "every click labelled: {summary}"
    );

    let root = env!("CARGO_MANIFEST_DIR");
    let python = Path::new(root).join(".venv/bin/python");
    let train = Command::new(&python)
        .current_dir(root)
        .args([
            "training/train.py",
            data.to_str().unwrap(),
            "--out-dir",
            &dir_s,
        ])
        .args(["--name", "live", "--model-name", "eaglerank-lgbm-live"])
        .args(["--match-metadata", "models/ranker.json", "--trees", "60"])
        .output()
        .expect("the training venv exists: run scripts/setup");
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let offline: Value = serde_json::from_slice(&train.stdout).unwrap();
    // A training set whose features differ from the model it must match is refused.
    let text = std::fs::read_to_string(&data).unwrap();
    let renamed = dir.path().join("renamed.jsonl");
    std::fs::write(
        &renamed,
        text.replacen("\"item_ctr\"", "\"item_ctr_v2\"", 1),
    )
    .unwrap();
    let refused = Command::new(&python)
        .current_dir(root)
        .args([
            "training/train.py",
            renamed.to_str().unwrap(),
            "--out-dir",
            &dir_s,
        ])
        .args([
            "--name",
            "refused",
            "--match-metadata",
            "models/ranker.json",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("item_ctr_v2"), "{stderr}");
    assert!(!dir.path().join("refused.onnx").exists());
    assert!(
        offline["ndcg@20_model"].as_f64().unwrap() > 0.0,
        "{offline}"
    );
    assert!(offline["ndcg@20_served"].as_f64().is_some(), "{offline}");

    // The live-trained model as the second arm.
    let config = dir.path().join("experiment.toml");
    std::fs::write(
        &config,
        format!(
            "[models.live]\npath = \"{dir_s}/live.onnx\"\nmetadata = \"{dir_s}/live.json\"\n\
             [tenants.demo-a.experiment]\nname = \"live-retrain\"\n\
             arms = [{{ name = \"control\", model = \"default\", share = 0.5 }}, \
                     {{ name = \"live\", model = \"live\", share = 0.5 }}]\n"
        ),
    )
    .unwrap();
    let app = spawn_app_with_files(&[config], &[]).await;
    let driven = eaglerank::tools::drive::run(&settings, &drive_args(&app, 2, 600))
        .await
        .unwrap();
    assert_eq!(driven.arms.len(), 2, "{driven:?}");
    let run = cli(
        &[
            "experiment",
            "report",
            "--tenant",
            "demo-a",
            "--url",
            &app.address,
            "--json",
        ],
        &[("EAGLERANK_ADMIN_KEY", ADMIN_KEY)],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let arms = report["arms"].as_array().unwrap();
    assert_eq!(
        (arms[0]["arm"].as_str(), arms[1]["arm"].as_str()),
        (Some("control"), Some("live"))
    );
    for arm in arms {
        let name = arm["arm"].as_str().unwrap();
        // Every feed of the drive was counted for its arm, every click joined.
        assert_eq!(arm["feeds"], driven.arms[name].requests as u64, "{arm}");
        let ctr = arm["ctr_at_10"]["value"].as_f64().unwrap();
        assert!(arm["ctr_at_10"]["low"].as_f64().unwrap() <= ctr);
        assert!(ctr <= arm["ctr_at_10"]["high"].as_f64().unwrap());
    }
    assert!(
        arms[1]["ctr_at_10_vs_control"]["p_value"]
            .as_f64()
            .is_some()
    );
    eprintln!(
        "learning loop: offline {offline}\nlive CTR per arm {:?}\nreport {report:#}",
        driven.arms
    );
}

/// With Kafka configured the log goes to its topic (librdkafka's mock cluster as the broker),
/// outcomes too — through the events topic, the consumer and the join — and the export reads
/// the topic.
#[actix_rt::test]
async fn with_kafka_the_log_is_a_topic_and_the_export_reads_it() {
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("eaglerank-events", 2, 1).unwrap();
    kafka.create_topic("eaglerank-feature-log", 3, 1).unwrap();
    let brokers = kafka.bootstrap_servers();
    let app = spawn_app_with(&[
        ("kafka.brokers", brokers.clone().into()),
        ("feature_log.sample_rate", 1.0.into()),
        // No files: the records must come from the topic.
        ("feature_log.dir", "/nonexistent/feature-log".into()),
    ])
    .await;
    let mut events = Vec::new();
    for u in 0..3 {
        let f = feed(&app, &format!("u{u}"), false).await;
        events.push(event(&f, u, "click", 0));
    }
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    let settings = eaglerank::config::Settings::load_with(
        &[],
        &[
            ("kafka.brokers", brokers.into()),
            ("feature_log.dir", "/nonexistent/feature-log".into()),
        ],
    )
    .unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let args = eaglerank::tools::learning::ExportArgs {
        out: out.path().to_owned(),
        since: None,
        until: None,
        tenant: None,
        join_window_seconds: None,
    };
    // The consumer applies the clicks and the writer flushes: within seconds.
    let start = Instant::now();
    let summary = loop {
        if let Ok(s) = eaglerank::tools::learning::export(&settings, &args)
            && s.labels.click == 3
        {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the clicks never reached the topic"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(summary.requests, 3);
    assert_eq!(summary.rows, 60);
}

/// An arm may be arranged by a rules preset instead of its tenant's rules.
#[actix_rt::test]
async fn an_arm_may_rank_with_a_rules_preset() {
    let dir = tempfile::tempdir().unwrap();
    let categories: Vec<String> = (0..12).map(|c| format!("\"cat-{c:02}\"")).collect();
    let config = dir.path().join("preset.toml");
    std::fs::write(
        &config,
        format!(
            "[rules_presets.half-catalog]\nexclude = {{ categories = [{}] }}\n\
             [tenants.demo-a.experiment]\nname = \"preset\"\n\
             arms = [{{ name = \"control\", model = \"default\", share = 0.5 }}, \
                     {{ name = \"narrow\", model = \"default\", share = 0.5, rules = \"half-catalog\" }}]\n",
            categories.join(", ")
        ),
    )
    .unwrap();
    let app = spawn_app_with_files(&[config], &[]).await;
    let mut seen = std::collections::HashSet::new();
    for u in 0..40 {
        let f = feed(&app, &format!("u{u}"), true).await;
        let excluded = f["rules_removed"]["excluded"].as_u64().unwrap_or(0);
        match f["arm"].as_str().unwrap() {
            "narrow" => assert!(excluded > 0, "{}", f["rules_removed"]),
            _ => assert_eq!(excluded, 0, "{}", f["rules_removed"]),
        }
        seen.insert(f["arm"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2);
    // A preset that does not exist is refused at start, naming the field.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[tenants.demo-a.experiment]\nname = \"x\"\narms = [{ name = \"a\", model = \"default\", share = 1.0, rules = \"nope\" }]\n",
    )
    .unwrap();
    let err = eaglerank::config::Settings::load(&[bad])
        .unwrap_err()
        .to_string();
    assert!(err.contains("arms[0].rules"), "{err}");
}
