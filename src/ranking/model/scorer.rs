//! Which engine scores a model, and the one scoring interface over them all: tree ensembles
//! ([`TreeEnsemble`]) and linear models ([`LinearModel`]) natively, every other graph with
//! ONNX Runtime. The canary (probe rows) and drift run on whatever serves, so a native model
//! is watched exactly like an ONNX one.

use std::sync::Arc;

use super::linear::LinearModel;
use super::onnx::OnnxScorer;
use super::onnx_graph::Unsupported;
use super::trees::TreeEnsemble;
use super::{ModelError, ModelMetadata};
use crate::config::ModelEngine;

/// How far a native score may be from ONNX Runtime's for the native engine to serve a model.
/// (On the service's finite rows the trees agree to the bit: same comparisons, same f32
/// sums; a linear model's sums are ordered differently, a few units in the last place.)
pub const AGREEMENT: f32 = 1e-5;

#[derive(Clone)]
pub enum Engine {
    Native(Native),
    OnnxRuntime,
}

/// The engines EagleRank evaluates itself, shared by every thread (they hold no state).
#[derive(Clone)]
pub enum Native {
    Trees(Arc<TreeEnsemble>),
    Linear(Arc<LinearModel>),
}

impl Engine {
    /// The `engine` label of the model metrics and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Native(Native::Trees(_)) => "native_trees",
            Engine::Native(Native::Linear(_)) => "native_linear",
            Engine::OnnxRuntime => "onnxruntime",
        }
    }
}

impl Native {
    /// The graph's native engine, if it has one: a tree ensemble or a linear model.
    fn of(bytes: &[u8], metadata: &ModelMetadata) -> Result<Self, Unsupported> {
        let (input, output) = (&metadata.input, &metadata.output);
        let columns = metadata.features.len();
        TreeEnsemble::from_onnx(bytes, input, output, columns)
            .map(|trees| Native::Trees(Arc::new(trees)))
            .or_else(|not_trees| {
                LinearModel::from_onnx(bytes, input, output, columns)
                    .map(|linear| Native::Linear(Arc::new(linear)))
                    .map_err(|not_linear| Unsupported(format!("{not_trees}; {not_linear}")))
            })
    }

    fn score(&self, matrix: &[f32], rows: usize) -> Vec<f32> {
        match self {
            Native::Trees(trees) => trees.score(matrix, rows),
            Native::Linear(linear) => linear.score(matrix, rows),
        }
    }
}

/// The engine for a model: native when configured `auto`, the graph is one the native engines
/// reproduce, and it agrees with ONNX Runtime on the probe rows; otherwise (and always with
/// `onnxruntime`) ONNX Runtime.
pub(super) fn choose(
    setting: ModelEngine,
    bytes: &[u8],
    metadata: &Arc<ModelMetadata>,
) -> Result<Engine, ModelError> {
    if setting == ModelEngine::Onnxruntime {
        return Ok(Engine::OnnxRuntime);
    }
    let native = match Native::of(bytes, metadata) {
        Ok(native) => native,
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
    let gap = max_gap(&native.score(&matrix, rows.len()), &reference);
    let engine = Engine::Native(native);
    if gap > AGREEMENT {
        tracing::warn!(
            event = "NativeEngineDisagrees",
            model = %metadata.name,
            engine = engine.name(),
            max_abs_diff = gap,
            "the native engine disagrees with ONNX Runtime on the probe rows; \
             ONNX Runtime serves this model"
        );
        return Ok(Engine::OnnxRuntime);
    }
    Ok(engine)
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
    Native(Native, Arc<ModelMetadata>),
    Onnx(OnnxScorer),
}

impl Scorer {
    pub(super) fn new(
        engine: &Engine,
        bytes: &[u8],
        metadata: &Arc<ModelMetadata>,
    ) -> Result<Self, ModelError> {
        Ok(match engine {
            Engine::OnnxRuntime => Scorer::Onnx(OnnxScorer::new(bytes, metadata.clone())?),
            Engine::Native(native) => Scorer::Native(native.clone(), metadata.clone()),
        })
    }

    pub fn metadata(&self) -> &ModelMetadata {
        match self {
            Scorer::Native(_, metadata) => metadata,
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
            Scorer::Onnx(session) => session.score(matrix, rows),
            Scorer::Native(native, _) => Ok(native.score(matrix, rows)),
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
