//! Applying user events to features: one path for REST and Kafka (validate a batch as a
//! whole, then one batched store call), the Kafka wire format and producer, and the join of
//! outcomes with the feeds they came from.

mod apply;
pub mod feed_join;
pub mod kafka;

pub use apply::*;
