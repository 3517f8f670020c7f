//! Logs, metrics and internal events.

pub mod events;
pub mod logging;
mod metrics;
mod ml_metrics;
pub mod otel;

pub use events::InternalEvent;
pub use metrics::Metrics;
