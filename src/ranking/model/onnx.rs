//! ONNX Runtime through `ort`, loaded dynamically from the library `scripts/setup` installs.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ort::session::Session;
use ort::value::{TensorRef, ValueType};

use super::{ModelError, ModelMetadata};

/// ONNX Runtime allows one environment per process, and the library loads once: the first
/// outcome (success or the reason for failure) is kept for the life of the process.
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

pub(super) fn init_runtime(library: &Path) -> Result<(), ModelError> {
    let outcome = RUNTIME.get_or_init(|| {
        if !library.is_file() {
            return Err("no such file".to_owned());
        }
        // `init_from` returns an error for a bad library, where `ort::init` would panic.
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        builder
            .with_name("eaglerank")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(_) => Ok(()),
        Err(reason) => Err(ModelError::Runtime {
            path: library.to_owned(),
            reason: reason.clone(),
        }),
    }
}

fn environment() -> Result<&'static ort::environment::Environment, ModelError> {
    match RUNTIME.get() {
        Some(Ok(env)) => Ok(env),
        _ => Err(ModelError::Ort("runtime not initialised".into())),
    }
}

/// One ONNX session. `Session::run` takes `&mut self`, so each ranker owns one, with one
/// intra-op thread: parallelism comes from the number of rankers (one per HTTP worker).
pub struct OnnxScorer {
    session: Session,
    metadata: Arc<ModelMetadata>,
}

impl OnnxScorer {
    pub fn new(bytes: &[u8], metadata: Arc<ModelMetadata>) -> Result<Self, ModelError> {
        let session = Session::builder(environment()?)?
            .with_intra_threads(1)
            .map_err(ort::Error::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::from)?
            .commit_from_memory(bytes)?;
        check_signature(&session, &metadata)?;
        Ok(Self { session, metadata })
    }

    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// Scores `rows` rows of a row-major matrix with `metadata.features.len()` columns
    /// (the caller, [`super::Scorer`], checked its size).
    pub fn score(&mut self, matrix: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let cols = self.metadata.features.len();
        let input = TensorRef::from_array_view(([rows, cols], matrix))?;
        let outputs = self
            .session
            .run(ort::inputs![self.metadata.input.as_str() => input])?;
        let output = outputs.get(&self.metadata.output).ok_or_else(|| {
            ModelError::Mismatch(format!("no output named {:?}", self.metadata.output))
        })?;
        let (_, scores) = output.try_extract_tensor::<f32>()?;
        if scores.len() != rows {
            return Err(ModelError::Mismatch(format!(
                "{} scores for {rows} rows",
                scores.len()
            )));
        }
        Ok(scores.to_vec())
    }
}

fn check_signature(session: &Session, meta: &ModelMetadata) -> Result<(), ModelError> {
    let inputs = session.inputs();
    let [input] = inputs else {
        return Err(ModelError::Mismatch(format!(
            "model has {} inputs, expected exactly one",
            inputs.len()
        )));
    };
    if input.name() != meta.input {
        return Err(ModelError::Mismatch(format!(
            "model input is {:?}, metadata says {:?}",
            input.name(),
            meta.input
        )));
    }
    if let ValueType::Tensor { shape, .. } = input.dtype() {
        let dims: &[i64] = shape;
        let width = dims.last().copied().unwrap_or(-1);
        if dims.len() != 2 || (width >= 0 && width as usize != meta.features.len()) {
            return Err(ModelError::Mismatch(format!(
                "model input shape is {dims:?}, metadata names {} features",
                meta.features.len()
            )));
        }
    } else {
        return Err(ModelError::Mismatch("model input is not a tensor".into()));
    }
    if !session.outputs().iter().any(|o| o.name() == meta.output) {
        return Err(ModelError::Mismatch(format!(
            "model has no output named {:?}",
            meta.output
        )));
    }
    Ok(())
}
