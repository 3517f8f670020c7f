//! The live learning loop: what was served is logged with the exact features it was ranked
//! with (`feature_log`, written by a background thread to rotated files or a Kafka topic:
//! `sinks`), joined at export time with what users did into a training set (`dataset`), and
//! new models are compared with the current one on real users (`experiments`: stable
//! assignment of users to arms; `report`: per-arm rates, intervals and tests).
//!
//! Plain code under the serving path: the API layer samples and logs feeds and assigns arms,
//! ingestion logs outcomes, the CLI exports and reports.

pub mod dataset;
pub mod experiments;
pub mod feature_log;
pub mod records;
pub mod report;
pub mod sinks;

pub use experiments::{Assignment, Experiments};
pub use feature_log::FeatureLog;
pub use records::{FeedRecord, LoggedItem, OutcomeRecord, Record};
