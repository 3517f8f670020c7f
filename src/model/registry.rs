//! The model being served, and how it is replaced while serving: a new model is loaded and
//! canary-checked beside the old one, then swapped in with one pointer write. Requests that
//! already took the old model finish with it; a model that fails its checks never serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use super::{LoadedModel, ModelError};
use crate::config::ModelSettings;

/// What identifies a version of the model files on disk.
type FileStamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(settings: &ModelSettings) -> FileStamp {
    [&settings.path, &settings.metadata]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

pub enum ReloadOutcome {
    Loaded(Arc<LoadedModel>),
    Rejected(ModelError),
}

pub struct ModelRegistry {
    settings: ModelSettings,
    current: RwLock<Arc<LoadedModel>>,
    /// The files as last tried (loaded or rejected): a rejected version is not retried until
    /// the files change again.
    tried: Mutex<FileStamp>,
    canary_ok: AtomicBool,
}

impl ModelRegistry {
    pub fn new(settings: ModelSettings, model: LoadedModel) -> Self {
        Self {
            tried: Mutex::new(stamp(&settings)),
            settings,
            current: RwLock::new(Arc::new(model)),
            canary_ok: AtomicBool::new(true),
        }
    }

    /// The model to serve this request with.
    pub fn current(&self) -> Arc<LoadedModel> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the files changed since they were last tried.
    pub fn files_changed(&self) -> bool {
        *self.tried.lock().unwrap_or_else(|e| e.into_inner()) != stamp(&self.settings)
    }

    /// Loads the files as they are now and, if the model passes its checks (signature,
    /// features, probe), serves it from the next request on.
    pub fn reload(&self) -> ReloadOutcome {
        *self.tried.lock().unwrap_or_else(|e| e.into_inner()) = stamp(&self.settings);
        match LoadedModel::load(&self.settings) {
            Ok(model) => {
                let model = Arc::new(model);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = model.clone();
                self.canary_ok.store(true, Ordering::SeqCst);
                ReloadOutcome::Loaded(model)
            }
            Err(e) => ReloadOutcome::Rejected(e),
        }
    }

    /// The last canary verdict on the served model (readiness reads it).
    pub fn canary_ok(&self) -> bool {
        self.canary_ok.load(Ordering::SeqCst)
    }

    pub fn set_canary(&self, ok: bool) {
        self.canary_ok.store(ok, Ordering::SeqCst);
    }
}
