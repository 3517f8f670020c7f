//! Logs, metrics and internal events.

pub mod events;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod recent;

pub use events::InternalEvent;
pub use metrics::Metrics;
