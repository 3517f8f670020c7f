//! Internal events: one type per thing that happens, each emitting its log line and updating
//! its metrics in one place, so that the two never drift apart. One file per area; events take
//! plain values (strings, counts, durations, `&dyn Error`), never another layer's types, so
//! that telemetry stays the bottom layer everything else may use.

mod actors;
mod budget;
mod feed;
mod ingest;
mod learning;
mod model;
mod quality;
mod rules;
mod server;
mod store;

pub use actors::*;
pub use budget::*;
pub use feed::*;
pub use ingest::*;
pub use learning::*;
pub use model::*;
pub use quality::*;
pub use rules::*;
pub use server::*;
pub use store::*;

use super::Metrics;

pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}
