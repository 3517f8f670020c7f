//! Model health on the real request path: what the ranker is fed, drift against the training
//! reference, the canary, live ranking quality, and model reloads.

use serde_json::Value;

use crate::helpers::{DEMO_A_KEY, RedisServer, TestApp, metric_sum, metric_value};
use crate::redis::{load_demo, spawn_redis_app_with};

const USER_FEATURES: [&str; 5] = [
    "user_log_interactions",
    "user_category_affinity",
    "user_brand_affinity",
    "user_price_ratio",
    "user_seen_item",
];

fn invalid(metrics: &str, feature: &str, kind: &str) -> f64 {
    metric_value(
        metrics,
        &format!(
            r#"eaglerank_feature_invalid_total{{feature="{feature}",kind="{kind}",model="{FIRST_STAGE}"}}"#
        ),
    )
    .unwrap_or(0.0)
}

async fn feed(app: &TestApp, user: &str) -> Value {
    let res = app
        .feed("demo-a", DEMO_A_KEY, &format!("user_id={user}&limit=20"))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A cold-start user's features are missing (default-filled); a corrupt value written into
/// Redis by some other writer reaches the ranker as NaN. Both are counted per feature, and the
/// feed is still served with finite scores.
#[actix_rt::test]
async fn missing_and_nan_features_are_counted_per_feature() {
    let redis = RedisServer::start();
    load_demo(&redis).await;
    // Item cache off in effect: the corrupted value must be read on the next request.
    let app = spawn_redis_app_with(&redis, &[("cache.item_ttl_ms", 1.into())]).await;
    app.wait_ready(200).await;

    let first = feed(&app, "nobody-knows-me").await;
    let m = app.metrics().await;
    let scored = invalid(&m, "user_category_affinity", "missing");
    assert!(
        scored >= 20.0,
        "every candidate lacks user features: {scored}"
    );
    for f in USER_FEATURES {
        assert_eq!(invalid(&m, f, "missing"), scored, "{f}");
    }
    assert_eq!(invalid(&m, "item_ctr", "missing"), 0.0);
    assert_eq!(invalid(&m, "item_ctr", "nan"), 0.0);

    let victim = first["items"][0]["item_id"].as_str().unwrap().to_owned();
    // The item's counts are packed f64 in its `stats` field (store::keys), clicks second.
    let mut redis_cli = deadpool_redis::redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let key = format!("er:{{demo-a}}:item:{victim}");
    let mut stats: Vec<u8> = deadpool_redis::redis::cmd("HGET")
        .arg(&key)
        .arg("stats")
        .query(&mut redis_cli)
        .unwrap();
    stats[8..16].copy_from_slice(&f64::NAN.to_le_bytes());
    deadpool_redis::redis::cmd("HSET")
        .arg(&key)
        .arg("stats")
        .arg(stats)
        .exec(&mut redis_cli)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let second = feed(&app, "nobody-knows-me").await;
    let m = app.metrics().await;
    // clicks feeds three features; each saw one NaN (the victim is still a candidate).
    for f in ["item_ctr", "item_log_clicks", "item_conversion"] {
        assert_eq!(invalid(&m, f, "nan"), 1.0, "{f}");
    }
    assert_eq!(invalid(&m, "item_log_impressions", "nan"), 0.0);
    for item in second["items"].as_array().unwrap() {
        assert!(item["score"].as_f64().unwrap().is_finite(), "{item}");
    }
}

const ADMIN_KEY: &str = "er_admin_demo_Wq4Zt8Kp2Nx6";
const LGBM: &str = "eaglerank-lgbm-lambdarank";
/// The demo's cascade first stage: it scores every candidate, so the assembled rows (their
/// invalid values, their drift) are counted under its name.
const FIRST_STAGE: &str = "eaglerank-first-stage";

/// The committed models' files copied where a test may replace them.
struct ModelDir {
    dir: tempfile::TempDir,
}

impl ModelDir {
    fn new() -> Self {
        let m = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        m.install("ranker");
        m
    }

    fn onnx(&self) -> String {
        self.dir.path().join("model.onnx").display().to_string()
    }

    fn json(&self) -> String {
        self.dir.path().join("model.json").display().to_string()
    }

    /// Replaces the served files with `models/<stem>.*` (the JSON last, as a deploy would).
    fn install(&self, stem: &str) {
        std::fs::copy(format!("models/{stem}.onnx"), self.onnx()).unwrap();
        std::fs::copy(format!("models/{stem}.json"), self.json()).unwrap();
    }

    /// The committed model with its recorded probe scores shifted: a model whose outputs
    /// differ from what its metadata recorded.
    fn install_with_wrong_probe(&self) {
        let mut meta: Value =
            serde_json::from_str(&std::fs::read_to_string("models/ranker.json").unwrap()).unwrap();
        for e in meta["probe"]["expected"].as_array_mut().unwrap() {
            *e = (e.as_f64().unwrap() + 1.0).into();
        }
        std::fs::copy("models/ranker.onnx", self.onnx()).unwrap();
        std::fs::write(self.json(), meta.to_string()).unwrap();
    }

    async fn spawn(&self, watchdog_ms: i64) -> TestApp {
        crate::helpers::spawn_app_with(&[
            ("model.path", self.onnx().into()),
            ("model.metadata", self.json().into()),
            ("model.watchdog_interval_ms", watchdog_ms.into()),
        ])
        .await
    }
}

async fn reload(app: &TestApp, key: Option<&str>) -> reqwest::Response {
    let mut req = app.client.post(app.url("/v1/admin/models/reload"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// An admin reload answers 422 `model_rejected`, saying why (`reason`).
async fn assert_reload_rejected(app: &TestApp, reason: &str) {
    let res = reload(app, Some(ADMIN_KEY)).await;
    let body = crate::errors::assert_error(
        res,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "model_rejected",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(reason), "{body}");
}

async fn serving_model(app: &TestApp) -> String {
    feed(app, "u1").await["model"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Feeds in a loop until told to stop; returns every status seen.
fn hammer(
    app: &TestApp,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> actix_rt::task::JoinHandle<Vec<u16>> {
    let (client, url) = (app.client.clone(), app.url("/v1/tenants/demo-a/feed"));
    actix_rt::spawn(async move {
        let mut statuses = Vec::new();
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            let res = client
                .get(format!("{url}?user_id=u{}&limit=10", i % 300))
                .bearer_auth(DEMO_A_KEY)
                .send()
                .await
                .unwrap();
            statuses.push(res.status().as_u16());
        }
        statuses
    })
}

/// Reloads under traffic: a corrupt file is rejected (422) and the old model keeps serving;
/// a good one is swapped in by the admin call, another one by replacing the files alone.
/// No request fails meanwhile.
#[actix_rt::test]
async fn models_reload_under_traffic_and_bad_ones_are_rejected() {
    let models = ModelDir::new();
    let app = models.spawn(100).await;
    assert_eq!(serving_model(&app).await, LGBM);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..3).map(|_| hammer(&app, stop.clone())).collect();

    // Only an admin key may reload.
    assert_eq!(reload(&app, None).await.status(), 401);
    assert_eq!(reload(&app, Some(DEMO_A_KEY)).await.status(), 403);

    std::fs::write(models.onnx(), b"not an onnx model").unwrap();
    assert_reload_rejected(&app, "ONNX").await;
    assert_eq!(
        serving_model(&app).await,
        LGBM,
        "the old model keeps serving"
    );

    models.install("ranker-linear");
    let res = reload(&app, Some(ADMIN_KEY)).await;
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    let report = &report["models"][0];
    assert_eq!(report["slot"], "default");
    assert_eq!(report["loaded"], true);
    let linear = report["model"].as_str().unwrap().to_owned();
    assert_ne!(linear, LGBM);
    assert_eq!(serving_model(&app).await, linear);

    // Replacing the files is enough: the watchdog notices within its interval.
    models.install("ranker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while serving_model(&app).await != LGBM {
        assert!(
            std::time::Instant::now() < deadline,
            "the watchdog never reloaded"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut served = 0;
    for t in traffic {
        let statuses = t.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a request failed during reloads: {statuses:?}"
        );
        served += statuses.len();
    }
    assert!(served > 0);
    let m = app.metrics().await;
    assert!(metric_value(&m, r#"eaglerank_model_reloads_total{outcome="loaded"}"#).unwrap() >= 2.0);
    assert!(
        metric_value(&m, r#"eaglerank_model_reloads_total{outcome="rejected"}"#).unwrap() >= 1.0
    );
    assert_eq!(
        metric_value(
            &m,
            &format!(r#"eaglerank_model_canary_ok{{model="{LGBM}"}}"#)
        ),
        Some(1.0)
    );
}

/// The canary: a model whose outputs differ from what its metadata recorded is refused when
/// its files arrive, and — should it ever be the one serving — marks the service not ready.
#[actix_rt::test]
async fn the_canary_catches_a_model_whose_outputs_differ_from_the_recorded_ones() {
    let models = ModelDir::new();
    let app = models.spawn(100).await;
    models.install_with_wrong_probe();
    assert_reload_rejected(&app, "probe row").await;
    app.wait_ready(200).await;

    // Serving such a model can only happen if something changes under a loaded one (the
    // runtime library, the machine): a check-free load stands in for that here.
    let mut settings = eaglerank::config::Settings::load(&[]).unwrap().model;
    settings.path = models.onnx().into();
    settings.metadata = models.json().into();
    let unchecked = eaglerank::ranking::model::LoadedModel::load_unchecked(&settings).unwrap();
    let registry = std::sync::Arc::new(eaglerank::ranking::model::ModelRegistry::new(
        settings, unchecked,
    ));
    let metrics = canary_verdict(&registry).await;
    assert!(!registry.canary_ok(), "readiness reads this");
    assert_eq!(
        metrics.ml.model_canary_ok.with_label_values(&[LGBM]).get(),
        0,
        "eaglerank_model_canary_ok"
    );
}

/// A cascade's first stage is a model like any other: checked against its probe at start-up
/// (the service refuses to start, naming the slot) and by the canary while serving, whose
/// verdict readiness reads.
#[actix_rt::test]
async fn a_cascade_stage_failing_its_canary_fails_readiness_like_any_model() {
    let dir = tempfile::tempdir().unwrap();
    let (onnx, json) = (dir.path().join("first.onnx"), dir.path().join("first.json"));
    std::fs::copy("models/ranker-first-stage.onnx", &onnx).unwrap();
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string("models/ranker-first-stage.json").unwrap())
            .unwrap();
    for e in meta["probe"]["expected"].as_array_mut().unwrap() {
        *e = (e.as_f64().unwrap() + 1.0).into();
    }
    std::fs::write(&json, meta.to_string()).unwrap();
    let settings = eaglerank::config::Settings::load_with(
        &[],
        &[
            ("models.first_stage.path", onnx.display().to_string().into()),
            (
                "models.first_stage.metadata",
                json.display().to_string().into(),
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        settings.tenants["demo-a"].first_stage_model.as_deref(),
        Some("first_stage")
    );

    let refused = eaglerank::ranking::model::ModelRegistry::load(&settings)
        .err()
        .unwrap();
    assert_eq!(refused.slot, "first_stage");
    assert!(refused.to_string().contains("probe row"), "{refused}");

    let registry = std::sync::Arc::new(
        eaglerank::ranking::model::ModelRegistry::load_unchecked(&settings).unwrap(),
    );
    let metrics = canary_verdict(&registry).await;
    assert!(!registry.canary_ok(), "readiness reads this");
    let canary = |model: &str| metrics.ml.model_canary_ok.with_label_values(&[model]).get();
    assert_eq!(canary(FIRST_STAGE), 0);
    assert_eq!(canary(LGBM), 1, "the second stage passes");
}

/// Starts a model watchdog over `registry` and waits for its first canary verdict (it runs
/// one at start); returns the metrics it wrote.
async fn canary_verdict(
    registry: &std::sync::Arc<eaglerank::ranking::model::ModelRegistry>,
) -> std::sync::Arc<eaglerank::telemetry::Metrics> {
    let metrics = std::sync::Arc::new(eaglerank::telemetry::Metrics::new());
    let health = std::sync::Arc::new(eaglerank::actors::ActorHealth::new(
        metrics.clone(),
        &[("model_watchdog", 1)],
    ));
    let watchdog = eaglerank::actors::ModelWatchdog::new(
        registry.clone(),
        std::time::Duration::from_secs(3600),
        1000,
        metrics.clone(),
        health,
    );
    use actix::Actor;
    // The actor stops when its address is dropped: keep it for the rest of the test.
    std::mem::forget(watchdog.start());
    actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
    metrics
}

fn gauge(metrics: &str, series: &str) -> Option<f64> {
    metric_value(metrics, series)
}

/// Drift against the training reference: traffic like training's keeps PSI low; a shift (here
/// every request from a user the service has never seen) sends it up, feature by feature.
#[actix_rt::test]
async fn served_traffic_that_shifts_moves_the_drift_psi() {
    // Windows of >= 250 sampled rows (16 per request: ~16+ requests): each mixes users as
    // training did.
    let app = crate::helpers::spawn_app_with(&[
        ("model.watchdog_interval_ms", 50.into()),
        ("model.drift_min_samples", 250.into()),
    ])
    .await;
    // In the demo's cascade the first stage scores every candidate: drift is measured on its
    // rows and scores. The second stage sees only the first's best (not what its training
    // reference describes): it reports no drift there.
    let user_known =
        format!(r#"eaglerank_feature_drift_psi{{feature="user_known",model="{FIRST_STAGE}"}}"#);
    let samples = format!(r#"eaglerank_drift_samples_total{{model="{FIRST_STAGE}"}}"#);
    let settle = || actix_rt::time::sleep(std::time::Duration::from_millis(300));

    // Training saw ~11 % of rows from users without history: one request in ten here.
    for i in 0..60 {
        let user = if i % 10 == 0 {
            format!("new-{i}")
        } else {
            format!("u{i}")
        };
        feed(&app, &user).await;
    }
    settle().await;
    let m = app.metrics().await;
    let before = gauge(&m, &user_known).expect("a drift window was reported");
    let reported = metric_value(&m, &samples).unwrap();
    assert!(
        gauge(
            &m,
            &format!(r#"eaglerank_score_drift_psi{{model="{FIRST_STAGE}"}}"#)
        )
        .is_some()
    );
    let second_stage = format!(r#"eaglerank_drift_samples_total{{model="{LGBM}"}}"#);
    assert_eq!(metric_value(&m, &second_stage).unwrap_or(0.0), 0.0);

    for i in 0..60 {
        feed(&app, &format!("stranger-{i}")).await;
    }
    settle().await;
    let m = app.metrics().await;
    let after = gauge(&m, &user_known).unwrap();
    assert!(
        metric_value(&m, &samples).unwrap() > reported,
        "new windows"
    );
    assert!(before < 0.25, "traffic like training's: {before}");
    assert!(
        after > 1.0 && after > before + 0.25,
        "before {before}, after {after}"
    );
}

/// Live ranking quality: clicks and purchases carrying a feed's request_id are joined with
/// the feed, at the rank the item was shown.
#[actix_rt::test]
async fn clicks_joined_with_their_feeds_give_ctr_at_k_and_mrr() {
    let app = crate::helpers::spawn_app().await;
    let (a, b) = (feed(&app, "u1").await, feed(&app, "u2").await);
    let id = |f: &Value, rank: usize| f["items"][rank - 1]["item_id"].as_str().unwrap().to_owned();
    let rid = |f: &Value| f["request_id"].as_str().unwrap().to_owned();
    let outsider = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .find(|i| {
            !a["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["item_id"] == *i)
        })
        .expect("an item of b's feed that a's lacks");
    let event = |n: usize, kind: &str, user: &str, item: String, request_id: String| {
        serde_json::json!({"event_id": format!("q{n}"), "type": kind, "user_id": user,
            "item_id": item, "timestamp": eaglerank::ingest::now_rfc3339(), "request_id": request_id})
    };
    let events = vec![
        event(1, "click", "u1", id(&a, 1), rid(&a)),
        event(2, "click", "u2", id(&b, 3), rid(&b)),
        event(3, "click", "u1", id(&a, 2), rid(&a)),
        event(4, "purchase", "u2", id(&b, 3), rid(&b)),
        event(5, "impression", "u2", id(&b, 4), rid(&b)),
        event(6, "click", "u1", id(&a, 1), "no-such-request".into()),
        event(7, "click", "u1", outsider, rid(&a)),
    ];
    let res = app.post_events(&Value::from(events)).await;
    assert_eq!(res.status(), 202);

    let m = app.metrics().await;
    let version = a["model"]["version"].as_str().unwrap();
    let labels = format!(r#"model="{LGBM}",tenant="demo-a",version="{version}""#);
    let at = |kind: &str, k: usize| {
        metric_value(
            &m,
            &format!(
                r#"eaglerank_ranking_interactions_total{{k="{k}",model="{LGBM}",tenant="demo-a",type="{kind}",version="{version}"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        metric_value(&m, &format!("eaglerank_ranking_feeds_total{{{labels}}}")),
        Some(2.0)
    );
    assert_eq!(
        [at("click", 1), at("click", 5), at("click", 20)],
        [1.0, 3.0, 3.0]
    );
    assert_eq!([at("purchase", 1), at("purchase", 5)], [0.0, 1.0]);
    // First clicks only: rank 1 in a, rank 3 in b.
    let rr = metric_value(
        &m,
        &format!("eaglerank_ranking_reciprocal_rank_sum{{{labels}}}"),
    )
    .unwrap();
    assert!((rr - (1.0 + 1.0 / 3.0)).abs() < 1e-9, "{rr}");
    for reason in ["unknown_request", "not_in_feed"] {
        assert_eq!(
            metric_value(
                &m,
                &format!(r#"eaglerank_ranking_unjoined_total{{reason="{reason}"}}"#)
            ),
            Some(1.0),
            "{reason}"
        );
    }
}

const LINEAR: &str = "eaglerank-linear";

/// Several models: each tenant is ranked by the model its config names, and a shadow model
/// scored beside the live one on a sample of requests reports its top-k overlap.
#[actix_rt::test]
async fn tenants_choose_their_model_and_a_shadow_model_is_compared() {
    let app = crate::helpers::spawn_app_with(&[
        ("models.linear.path", "models/ranker-linear.onnx".into()),
        ("models.linear.metadata", "models/ranker-linear.json".into()),
        ("tenants.demo-b.model", "linear".into()),
        ("tenants.demo-a.shadow_model", "linear".into()),
        ("tenants.demo-a.shadow_sample_rate", 0.5.into()),
    ])
    .await;
    let b = app
        .feed("demo-b", crate::helpers::DEMO_B_KEY, "user_id=u1")
        .await;
    assert_eq!(b.status(), 200);
    let b: Value = b.json().await.unwrap();
    assert_eq!(b["model"]["name"], LINEAR);
    for u in 0..4 {
        assert_eq!(feed(&app, &format!("u{u}")).await["model"]["name"], LGBM);
    }

    let m = app.metrics().await;
    let overlap = |suffix: &str| {
        metric_value(
            &m,
            &format!(
                r#"eaglerank_shadow_topk_overlap_ratio_{suffix}{{model="{LGBM}",shadow="{LINEAR}"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(overlap("count"), 2.0, "one request in two of demo-a's four");
    let mean = overlap("sum") / 2.0;
    assert!((0.0..=1.0).contains(&mean), "{mean}");
    // Both models were scored and are labelled apart.
    for model in [LGBM, LINEAR] {
        assert!(
            metric_value(
                &m,
                &format!(r#"eaglerank_model_inference_seconds_count{{model="{model}"}}"#)
            )
            .unwrap()
                >= 1.0,
            "{model}"
        );
    }
    let ready: Value = app.wait_ready(200).await;
    let slots: Vec<&str> = ready["components"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slot"].as_str().unwrap())
        .collect();
    assert_eq!(slots, ["default", "first_stage", "linear"]);

    // A reload may not bring a model whose name another slot's model has: metrics would mix
    // them. (The default slot's files become the linear model's.)
    let dir = ModelDir::new();
    let app = crate::helpers::spawn_app_with(&[
        ("model.path", dir.onnx().into()),
        ("model.metadata", dir.json().into()),
        ("models.linear.path", "models/ranker-linear.onnx".into()),
        ("models.linear.metadata", "models/ranker-linear.json".into()),
    ])
    .await;
    dir.install("ranker-linear");
    assert_reload_rejected(&app, "another model's").await;
    assert_eq!(serving_model(&app).await, LGBM);

    // A tenant naming a model that is not configured is a configuration error.
    let err =
        eaglerank::config::Settings::load_with(&[], &[("tenants.demo-a.model", "nope".into())])
            .expect_err("refused");
    assert!(err.to_string().contains("nope"), "{err}");
}

/// The simulated users drive a running service; when their preferences shift, the live
/// CTR@20 the service measures (clicks joined with its feeds) falls.
#[actix_rt::test]
async fn shifting_the_simulated_preferences_moves_live_ctr() {
    let app = crate::helpers::spawn_app().await;
    let settings = eaglerank::config::Settings::load_with(
        &[],
        &[
            ("store.demo.items", 1500.into()),
            ("store.demo.users", 300.into()),
        ],
    )
    .unwrap();
    let drive = |shift, seed| eaglerank::tools::drive::DriveArgs {
        url: app.address.clone(),
        key: DEMO_A_KEY.to_owned(),
        tenant: "demo-a".into(),
        requests: 150,
        limit: 20,
        seed,
        shift,
        users: 0,
    };
    let m0 = app.metrics().await;
    let before = eaglerank::tools::drive::run(&settings, &drive(false, 1))
        .await
        .unwrap();
    let m1 = app.metrics().await;
    let after = eaglerank::tools::drive::run(&settings, &drive(true, 2))
        .await
        .unwrap();
    let m2 = app.metrics().await;

    // Live CTR@20 between two scrapes: clicks joined within the top 20, per 20 slots served.
    let ctr = |a: &str, b: &str| {
        let clicks = [r#"k="20""#, r#"type="click""#];
        let feeds = ["demo-a"];
        let joined = metric_sum(b, "eaglerank_ranking_interactions_total{", &clicks)
            - metric_sum(a, "eaglerank_ranking_interactions_total{", &clicks);
        let served = metric_sum(b, "eaglerank_ranking_feeds_total{", &feeds)
            - metric_sum(a, "eaglerank_ranking_feeds_total{", &feeds);
        joined / (20.0 * served)
    };
    let (live_before, live_after) = (ctr(&m0, &m1), ctr(&m1, &m2));
    assert_eq!(before.requests, 150);
    // Every simulated click was joined with its feed: the live figure is the simulated one.
    assert!(
        (live_before - before.ctr).abs() < 1e-9,
        "{live_before} vs {before:?}"
    );
    assert!(before.clicks > 0 && live_before > 0.0, "{before:?}");
    assert!(
        live_after < 0.7 * live_before,
        "live CTR@20 {live_before:.4} -> {live_after:.4} (simulated {:.4} -> {:.4})",
        before.ctr,
        after.ctr
    );
}
