//! The feed pipeline and everything it ranks with: candidate generation (plan, merge), feature
//! rows, the models, and the pipeline functions that put them together. Plain Rust: the actors,
//! the simulator and the benchmark all call [`pipeline`].

pub mod candidates;
pub mod features;
pub mod model;
pub mod pipeline;
pub mod rules;
pub mod rules_book;
