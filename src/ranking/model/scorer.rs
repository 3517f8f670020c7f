//! Which engine scores a model, and the one scoring interface over both: tree ensembles
//! natively ([`TreeEnsemble`]), every other graph with ONNX Runtime. The canary (probe rows)
//! and drift run on whatever serves, so a native model is watched exactly like an ONNX one.

use std::sync::Arc;

use super::onnx::OnnxScorer;
use super::trees::TreeEnsemble;
use super::{ModelError, ModelMetadata};
use crate::config::ModelEngine;

/// How far a native score may be from ONNX Runtime's for the native engine to serve a model.
/// (On the service's finite rows they agree to the bit: same comparisons, same f32 sums.)
pub const AGREEMENT: f32 = 1e-5;

#[derive(Clone)]
pub enum Engine {
    Trees(Arc<TreeEnsemble>),
    OnnxRuntime,
}

impl Engine {
    /// The `engine` label of the model metrics and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Trees(_) => "native_trees",
            Engine::OnnxRuntime => "onnxruntime",
        }
    }
}

/// The engine for a model: native when configured `auto`, the graph is a tree ensemble the
/// evaluator reproduces, and it agrees with ONNX Runtime on the probe rows; otherwise (and
/// always with `onnxruntime`) ONNX Runtime.
pub(super) fn choose(
    setting: ModelEngine,
    bytes: &[u8],
    metadata: &Arc<ModelMetadata>,
) -> Result<Engine, ModelError> {
    if setting == ModelEngine::Onnxruntime {
        return Ok(Engine::OnnxRuntime);
    }
    let trees = match TreeEnsemble::from_onnx(
        bytes,
        &metadata.input,
        &metadata.output,
        metadata.features.len(),
    ) {
        Ok(trees) => trees,
        Err(why) => {
            tracing::debug!(model = %metadata.name, %why, "scored by ONNX Runtime");
            return Ok(Engine::OnnxRuntime);
        }
    };
    let rows = &metadata.probe.rows;
    let width = metadata.features.len();
    if rows.is_empty() || rows.iter().any(|r| r.len() != width) {
        // The probe check refuses the model anyway, with the reason.
        return Ok(Engine::OnnxRuntime);
    }
    let matrix = rows.concat();
    let reference = OnnxScorer::new(bytes, metadata.clone())?.score(&matrix, rows.len())?;
    let native = trees.score(&matrix, rows.len());
    let gap = max_gap(&native, &reference);
    if gap > AGREEMENT {
        tracing::warn!(
            event = "NativeTreesDisagree",
            model = %metadata.name,
            max_abs_diff = gap,
            "the native tree evaluator disagrees with ONNX Runtime on the probe rows; \
             ONNX Runtime serves this model"
        );
        return Ok(Engine::OnnxRuntime);
    }
    Ok(Engine::Trees(Arc::new(trees)))
}

/// The largest absolute difference between two score lists (infinite when a score is NaN or
/// the lengths differ).
pub fn max_gap(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// Scores batches for one thread.
pub enum Scorer {
    Trees(Arc<TreeEnsemble>, Arc<ModelMetadata>),
    Onnx(OnnxScorer),
}

impl Scorer {
    pub(super) fn new(
        engine: &Engine,
        bytes: &[u8],
        metadata: &Arc<ModelMetadata>,
    ) -> Result<Self, ModelError> {
        Ok(match engine {
            Engine::Trees(trees) => Scorer::Trees(trees.clone(), metadata.clone()),
            Engine::OnnxRuntime => Scorer::Onnx(OnnxScorer::new(bytes, metadata.clone())?),
        })
    }

    pub fn metadata(&self) -> &ModelMetadata {
        match self {
            Scorer::Trees(_, metadata) => metadata,
            Scorer::Onnx(session) => session.metadata(),
        }
    }

    /// Scores `rows` rows of a row-major matrix with `metadata.features.len()` columns.
    pub fn score(&mut self, matrix: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        let cols = self.metadata().features.len();
        if matrix.len() != rows * cols {
            return Err(ModelError::Mismatch(format!(
                "matrix has {} values, expected {rows} x {cols}",
                matrix.len()
            )));
        }
        match self {
            Scorer::Trees(trees, _) => Ok(trees.score(matrix, rows)),
            Scorer::Onnx(session) => session.score(matrix, rows),
        }
    }

    /// Scores the probe rows and compares with what training recorded.
    pub fn check_probe(&mut self) -> Result<(), ModelError> {
        let probe = self.metadata().probe.clone();
        let cols = self.metadata().features.len();
        if probe.rows.is_empty() || probe.rows.len() != probe.expected.len() {
            return Err(ModelError::Mismatch(
                "probe must have as many expected scores as rows, and at least one".into(),
            ));
        }
        if let Some(bad) = probe.rows.iter().find(|r| r.len() != cols) {
            return Err(ModelError::Mismatch(format!(
                "probe row has {} values, expected {cols}",
                bad.len()
            )));
        }
        let matrix: Vec<f32> = probe.rows.concat();
        let got = self.score(&matrix, probe.rows.len())?;
        let constant = |v: &[f32]| v.windows(2).all(|w| w[0] == w[1]);
        if got.len() > 1 && constant(&got) && !constant(&probe.expected) {
            return Err(ModelError::Mismatch(format!(
                "degenerate output: every probe row scores {}",
                got[0]
            )));
        }
        for (i, (g, e)) in got.iter().zip(&probe.expected).enumerate() {
            if !g.is_finite() || (g - e).abs() > probe.tolerance {
                return Err(ModelError::Mismatch(format!(
                    "probe row {i} scores {g}, training recorded {e} (tolerance {})",
                    probe.tolerance
                )));
            }
        }
        Ok(())
    }
}
