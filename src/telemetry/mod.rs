//! Logs, metrics and internal events.

pub mod events;
pub mod logging;
mod metrics;
pub mod tracing;

pub use events::InternalEvent;
pub use metrics::Metrics;
