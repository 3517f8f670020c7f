//! The models being served, and how one is replaced while serving: a new model is loaded and
//! canary-checked beside the old one, then swapped in with one pointer write. Requests that
//! already took the old model finish with it; a model that fails its checks never serves.
//!
//! Models live in named slots (`default` from `[model]`, others from `[models.<name>]`); each
//! tenant is ranked by one slot, and may have another scored as a shadow on a sample of its
//! requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use super::{LoadedModel, ModelError};
use crate::config::{DEFAULT_MODEL, ModelSettings, Settings};

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

/// One named model and its files.
pub struct Slot {
    pub name: String,
    settings: ModelSettings,
    current: RwLock<Arc<LoadedModel>>,
    /// The files as last tried (loaded or rejected): a rejected version is not retried until
    /// the files change again.
    tried: Mutex<FileStamp>,
    canary_ok: AtomicBool,
}

impl Slot {
    fn new(name: String, settings: ModelSettings, model: LoadedModel) -> Self {
        Self {
            name,
            tried: Mutex::new(stamp(&settings)),
            settings,
            current: RwLock::new(Arc::new(model)),
            canary_ok: AtomicBool::new(true),
        }
    }

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
    /// features, probe, a name no other slot's model has: `taken`), serves it from the next
    /// request on.
    pub fn reload(&self, taken: &[String]) -> ReloadOutcome {
        *self.tried.lock().unwrap_or_else(|e| e.into_inner()) = stamp(&self.settings);
        let loaded = LoadedModel::load(&self.settings).and_then(|model| {
            if taken.contains(&model.metadata.name) {
                return Err(ModelError::Mismatch(format!(
                    "its metadata name {:?} is another model's; names label the metrics",
                    model.metadata.name
                )));
            }
            Ok(model)
        });
        match loaded {
            Ok(model) => {
                let model = Arc::new(model);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = model.clone();
                self.canary_ok.store(true, Ordering::SeqCst);
                ReloadOutcome::Loaded(model)
            }
            Err(e) => ReloadOutcome::Rejected(e),
        }
    }

    /// The last canary verdict on the served model.
    pub fn canary_ok(&self) -> bool {
        self.canary_ok.load(Ordering::SeqCst)
    }

    pub fn set_canary(&self, ok: bool) {
        self.canary_ok.store(ok, Ordering::SeqCst);
    }
}

/// Which slots rank a tenant.
struct TenantModels {
    live: usize,
    /// The shadow slot, scored on one request in `every`.
    shadow: Option<(usize, u64)>,
    /// The cascade's first stage and how many candidates it passes on.
    first_stage: Option<(usize, usize)>,
    requests: AtomicU64,
}

/// A cascade's first stage: a cheap model that scores every candidate, of which the best
/// `keep` are scored again by the feed's model.
#[derive(Clone)]
pub struct FirstStage {
    pub model: Arc<LoadedModel>,
    pub keep: usize,
}

/// The models one feed uses.
pub struct FeedModels {
    /// Ranks the feed (the cascade's second stage).
    pub model: Arc<LoadedModel>,
    /// Scored too, never served, when this request is in the tenant's shadow sample.
    pub shadow: Option<Arc<LoadedModel>>,
    pub first_stage: Option<FirstStage>,
}

pub struct ModelRegistry {
    /// `default` first.
    slots: Vec<Slot>,
    tenants: HashMap<String, TenantModels>,
}

#[derive(Debug, thiserror::Error)]
#[error("model {slot:?}: {source}")]
pub struct SlotError {
    pub slot: String,
    #[source]
    pub source: ModelError,
}

impl ModelRegistry {
    /// One model, `default`, for every tenant.
    pub fn new(settings: ModelSettings, model: LoadedModel) -> Self {
        Self {
            slots: vec![Slot::new(DEFAULT_MODEL.to_owned(), settings, model)],
            tenants: HashMap::new(),
        }
    }

    /// Loads every configured model (each checked against its probe) and the tenants' choice.
    /// Two models may not share a metadata name: metrics tell models apart by it.
    pub fn load(settings: &Settings) -> Result<Self, SlotError> {
        Self::load_with(settings, LoadedModel::load)
    }

    /// As [`ModelRegistry::load`] without the probe check: for tests of a served model that
    /// fails its canary later, which a checked load never lets through.
    #[doc(hidden)]
    pub fn load_unchecked(settings: &Settings) -> Result<Self, SlotError> {
        Self::load_with(settings, LoadedModel::load_unchecked)
    }

    fn load_with(
        settings: &Settings,
        load: impl Fn(&ModelSettings) -> Result<LoadedModel, ModelError>,
    ) -> Result<Self, SlotError> {
        let mut slots = Vec::new();
        for (name, model_settings) in settings.model_slots() {
            let model = load(&model_settings).map_err(|source| SlotError {
                slot: name.clone(),
                source,
            })?;
            if let Some(other) = slots
                .iter()
                .find(|s: &&Slot| s.current().metadata.name == model.metadata.name)
            {
                return Err(SlotError {
                    slot: name,
                    source: ModelError::Mismatch(format!(
                        "its metadata name {:?} is also model {:?}'s; names label the metrics",
                        model.metadata.name, other.name
                    )),
                });
            }
            slots.push(Slot::new(name, model_settings, model));
        }
        let index = |name: &str| slots.iter().position(|s| s.name == name);
        let tenants = settings
            .tenants
            .iter()
            .map(|(id, t)| {
                // Config validation checked the names.
                let live = index(&t.model).unwrap_or(0);
                let shadow = t
                    .shadow_model
                    .as_deref()
                    .and_then(index)
                    .filter(|_| t.shadow_sample_rate > 0.0)
                    .map(|s| (s, (1.0 / t.shadow_sample_rate).round().max(1.0) as u64));
                let first_stage = t
                    .first_stage_model
                    .as_deref()
                    .and_then(index)
                    .map(|s| (s, t.first_stage_keep));
                let models = TenantModels {
                    live,
                    shadow,
                    first_stage,
                    requests: AtomicU64::new(0),
                };
                (id.clone(), models)
            })
            .collect();
        Ok(Self { slots, tenants })
    }

    /// The default model (warms the rankers; `/readyz`'s headline model).
    pub fn current(&self) -> Arc<LoadedModel> {
        self.slots[0].current()
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The model that ranks this request of `tenant`, and the shadow to score beside it when
    /// this request is in the tenant's shadow sample.
    pub fn for_tenant(&self, tenant: &str) -> (Arc<LoadedModel>, Option<Arc<LoadedModel>>) {
        let Some(t) = self.tenants.get(tenant) else {
            return (self.current(), None);
        };
        let shadow = t.shadow.and_then(|(slot, every)| {
            let n = t.requests.fetch_add(1, Ordering::Relaxed);
            (n % every == 0).then(|| self.slots[slot].current())
        });
        (self.slots[t.live].current(), shadow)
    }

    /// As [`ModelRegistry::for_tenant`], ranked by the slot named `slot` instead (an experiment
    /// arm's model) when given and loaded, with the tenant's first stage if it has a cascade.
    pub fn for_feed(&self, tenant: &str, slot: Option<&str>) -> FeedModels {
        let (live, shadow) = self.for_tenant(tenant);
        let model = match slot.and_then(|name| self.slots.iter().find(|s| s.name == name)) {
            Some(s) => s.current(),
            None => live,
        };
        let first_stage =
            self.tenants
                .get(tenant)
                .and_then(|t| t.first_stage)
                .map(|(slot, keep)| FirstStage {
                    model: self.slots[slot].current(),
                    keep,
                });
        FeedModels {
            model,
            shadow,
            first_stage,
        }
    }

    /// The names of the models the other slots serve.
    pub fn names_besides(&self, slot: &str) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.name != slot)
            .map(|s| s.current().metadata.name.clone())
            .collect()
    }

    /// Every served model passes its canary.
    pub fn canary_ok(&self) -> bool {
        self.slots.iter().all(Slot::canary_ok)
    }
}
