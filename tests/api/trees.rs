//! The native engines against ONNX Runtime. The tree evaluator on the committed LightGBM
//! model: the probe rows, the feature rows of real feeds (the demo marketplace's candidates for
//! many users), and rows set exactly on, just below and just above the model's own thresholds,
//! where a different comparison or rounding would show first. The linear engine on the
//! committed linear models, on real feeds' rows.

use eaglerank::config::{ModelEngine, Settings};
use eaglerank::ranking::features::{FeatureContext, FeatureHealth};
use eaglerank::ranking::model::{AGREEMENT, LoadedModel, max_gap};
use eaglerank::ranking::pipeline;
use eaglerank::store::MemoryStore;
use eaglerank::telemetry::Metrics;

fn load(engine: ModelEngine) -> LoadedModel {
    let mut settings = Settings::load(&[]).unwrap().model;
    settings.engine = engine;
    LoadedModel::load(&settings).unwrap()
}

#[actix_rt::test]
async fn native_trees_score_what_onnx_runtime_scores() {
    let native = load(ModelEngine::Auto);
    let onnx = load(ModelEngine::Onnxruntime);
    assert_eq!(native.engine.name(), "native_trees");
    assert_eq!(onnx.engine.name(), "onnxruntime");
    let (mut native_scorer, mut onnx_scorer) = (native.scorer().unwrap(), onnx.scorer().unwrap());
    let width = native.metadata.features.len();

    let settings = Settings::load(&[]).unwrap();
    let rows = real_feed_rows(&native).await;
    let n = rows.len() / width;
    assert!(n > 50_000, "{n} rows");
    let gap = max_gap(
        &native_scorer.score(&rows, n).unwrap(),
        &onnx_scorer.score(&rows, n).unwrap(),
    );
    eprintln!("{n} rows of real feeds: max |native - onnx| = {gap}");
    assert!(gap <= AGREEMENT, "real feeds: max |native - onnx| = {gap}");

    // Each probe row with one column moved onto every threshold the model splits that column
    // on (read back from the ONNX file), and one float step either side of it.
    let thresholds = thresholds_by_column(&std::fs::read(&settings.model.path).unwrap(), width);
    let mut edges = Vec::new();
    for probe in &native.metadata.probe.rows {
        for (column, values) in thresholds.iter().enumerate() {
            for &t in values {
                for x in [t, t.next_down(), t.next_up()] {
                    let mut row = probe.clone();
                    row[column] = x;
                    edges.extend_from_slice(&row);
                }
            }
        }
    }
    let m = edges.len() / width;
    assert!(m > 1000, "{m} edge rows");
    let (a, b) = (
        native_scorer.score(&edges, m).unwrap(),
        onnx_scorer.score(&edges, m).unwrap(),
    );
    eprintln!(
        "{m} rows on the thresholds: max |native - onnx| = {}",
        max_gap(&a, &b)
    );
    assert!(
        max_gap(&a, &b) <= AGREEMENT,
        "edge rows: {}",
        max_gap(&a, &b)
    );
    // Not a vacuous agreement: the edge rows do reach different leaves.
    assert!(a.iter().any(|s| *s != a[0]));
}

/// Real feeds' rows for `model`: every candidate of 200 demo users' first pages, as serving
/// assembles them.
async fn real_feed_rows(model: &LoadedModel) -> Vec<f32> {
    let settings = Settings::load(&[]).unwrap();
    let store = MemoryStore::new(["demo-a".to_owned()]);
    let anchor = 1_790_000_000.0;
    eaglerank::demo::seed_tenant(
        &store,
        &settings.store.demo,
        "demo-a",
        anchor,
        &Metrics::new(),
    )
    .await
    .unwrap();
    let limits = settings.candidate_limits("demo-a");
    let mut rows = Vec::new();
    let mut matrix = Vec::new();
    for u in (0..2000).step_by(10) {
        let user = format!("u{u}");
        let (profile, candidates) = pipeline::gather(&store, "demo-a", &user, &limits)
            .await
            .unwrap();
        let ctx = FeatureContext::new(anchor + 3600.0, profile.as_deref());
        pipeline::feature_rows(
            &model.spec,
            &ctx,
            &candidates,
            &mut matrix,
            &mut FeatureHealth::default(),
        );
        rows.extend_from_slice(&matrix);
    }
    rows
}

/// The split thresholds of the model, per column, from the `TreeEnsembleRegressor` attributes
/// (decoded here with Python's `onnx` package would be simpler, but the test reads the file
/// the service reads, with no Python).
fn thresholds_by_column(bytes: &[u8], width: usize) -> Vec<Vec<f32>> {
    let trees =
        eaglerank::ranking::model::TreeEnsemble::from_onnx(bytes, "input", "variable", width)
            .unwrap();
    let mut by_column = vec![Vec::new(); width];
    for (feature, threshold) in trees.splits() {
        by_column[feature].push(threshold);
    }
    for values in &mut by_column {
        values.sort_by(f32::total_cmp);
        values.dedup();
    }
    by_column
}

/// The linear models (the cheap path's ranker, the cascade's first stage) are scored natively
/// under `auto`, within [`AGREEMENT`] of ONNX Runtime on real feeds' rows; `onnxruntime` keeps
/// them on ONNX Runtime.
#[actix_rt::test]
async fn native_linear_models_score_what_onnx_runtime_scores() {
    for name in ["ranker-linear", "ranker-first-stage"] {
        let load = |engine| {
            let mut settings = Settings::load(&[]).unwrap().model;
            settings.path = format!("models/{name}.onnx").into();
            settings.metadata = format!("models/{name}.json").into();
            settings.engine = engine;
            LoadedModel::load(&settings).unwrap()
        };
        let (native, onnx) = (load(ModelEngine::Auto), load(ModelEngine::Onnxruntime));
        assert_eq!(native.engine.name(), "native_linear", "{name}");
        assert_eq!(onnx.engine.name(), "onnxruntime", "{name}");
        let rows = real_feed_rows(&native).await;
        let n = rows.len() / native.metadata.features.len();
        assert!(n > 50_000, "{n} rows");
        let a = native.scorer().unwrap().score(&rows, n).unwrap();
        let b = onnx.scorer().unwrap().score(&rows, n).unwrap();
        let gap = max_gap(&a, &b);
        eprintln!("{name}: {n} rows of real feeds: max |native - onnx| = {gap}");
        assert!(gap <= AGREEMENT, "{name}: max |native - onnx| = {gap}");
        // Not a vacuous agreement: the rows score differently.
        assert!(a.iter().any(|s| *s != a[0]), "{name}");
    }
}
