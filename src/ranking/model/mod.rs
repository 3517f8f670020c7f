//! The learned ranking model: its metadata file, ONNX Runtime loading, and scoring.
//!
//! Start-up refuses to serve with a model it cannot trust: the runtime library must load,
//! the model's single input must be `[batch, len(features)]` floats, every feature named by
//! the metadata must be computable, and the probe rows recorded at training time must score
//! as they did then.

mod drift;
mod linear;
mod onnx;
mod onnx_graph;
mod registry;
mod scorer;
mod trees;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{ModelEngine, ModelSettings};
use crate::ranking::features::{FeatureSpec, UnknownFeature};

pub use drift::{Bins, DriftMonitor, DriftReport, Reference, psi};
pub use linear::LinearModel;
pub use onnx::OnnxScorer;
pub use onnx_graph::Unsupported;
pub use registry::{FeedModels, FirstStage, ModelRegistry, ReloadOutcome, Slot, SlotError};
pub use scorer::{AGREEMENT, Engine, Native, Scorer, max_gap};
pub use trees::TreeEnsemble;

/// `models/<name>.json`, written by `training/train.py` next to the `.onnx` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub version: String,
    /// Name of the model's input tensor, `[batch, features.len()]` f32.
    pub input: String,
    /// Name of the output tensor holding one score per row.
    pub output: String,
    /// Feature names in column order.
    pub features: Vec<String>,
    /// Rows scored at training time and the scores they got, to check the runtime agrees.
    pub probe: Probe,
    /// Free-form training facts (data, parameters, offline metrics), shown in the README.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Training-time distributions of every feature and of the score: what drift is
    /// measured against. Without it, drift is not monitored.
    #[serde(default)]
    pub reference: Option<Reference>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub rows: Vec<Vec<f32>>,
    pub expected: Vec<f32>,
    pub tolerance: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "cannot load the ONNX Runtime library {path:?} (run `scripts/setup`, or set ORT_DYLIB_PATH / EAGLERANK__MODEL__ONNXRUNTIME_LIBRARY): {reason}"
    )]
    Runtime { path: PathBuf, reason: String },
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid model metadata {path:?}: {source}")]
    Metadata {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("model metadata names a feature the service cannot compute: {0}")]
    Feature(#[from] UnknownFeature),
    #[error("model does not match its metadata: {0}")]
    Mismatch(String),
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Ort(e.to_string())
    }
}

/// Every load gets a new id: rankers key their sessions by it, so a reloaded model
/// gets new sessions while requests already holding the old one finish with it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A model checked and ready to serve: its bytes (each ranker builds its own session
/// from them), its metadata, the feature spec its metadata describes, the drift monitor
/// its served traffic feeds, and the engine that scores it.
pub struct LoadedModel {
    pub id: u64,
    pub metadata: Arc<ModelMetadata>,
    pub spec: Arc<FeatureSpec>,
    pub drift: Option<DriftMonitor>,
    pub engine: Engine,
    bytes: Arc<[u8]>,
}

impl LoadedModel {
    /// Loads the model the settings name and checks it against its probe (the canary).
    pub fn load(settings: &ModelSettings) -> Result<Self, ModelError> {
        let model = Self::load_unchecked(settings)?;
        model.scorer()?.check_probe()?;
        Ok(model)
    }

    /// Loads without running the probe: for tests of what happens when the probe fails
    /// later, which a checked load never lets through.
    #[doc(hidden)]
    pub fn load_unchecked(settings: &ModelSettings) -> Result<Self, ModelError> {
        onnx::init_runtime(&settings.onnxruntime_library())?;
        let metadata = read_metadata(&settings.metadata)?;
        let bytes: Arc<[u8]> = std::fs::read(&settings.path)
            .map_err(|source| ModelError::Read {
                path: settings.path.clone(),
                source,
            })?
            .into();
        Self::from_parts(metadata, bytes, settings.engine)
    }

    #[doc(hidden)]
    pub fn from_parts(
        metadata: ModelMetadata,
        bytes: Arc<[u8]>,
        engine: ModelEngine,
    ) -> Result<Self, ModelError> {
        let spec = FeatureSpec::from_names(&metadata.features)?;
        let drift = metadata
            .reference
            .as_ref()
            .and_then(|r| DriftMonitor::new(r, &metadata.features));
        let metadata = Arc::new(metadata);
        let engine = scorer::choose(engine, &bytes, &metadata)?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            metadata,
            spec: Arc::new(spec),
            drift,
            engine,
            bytes,
        })
    }

    /// A scorer for one thread: the native trees (shared), or a new ONNX Runtime session.
    pub fn scorer(&self) -> Result<Scorer, ModelError> {
        Scorer::new(&self.engine, &self.bytes, &self.metadata)
    }
}

pub fn read_metadata(path: &Path) -> Result<ModelMetadata, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Metadata {
        path: path.to_owned(),
        source,
    })
}
