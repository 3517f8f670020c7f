//! Integration tests: the real server, a real HTTP client, a real ONNX model.
//! Requires `scripts/setup` (ONNX Runtime) to have run.

mod actors;
mod auth;
mod budgets;
mod connections;
mod errors;
mod events;
mod feed;
mod grpc;
mod health;
mod helpers;
mod items;
mod kafka;
mod learning;
mod lifecycle;
mod logs;
mod metrics;
mod ml;
mod ops;
mod pipeline;
mod redis;
mod rules;
mod trees;
