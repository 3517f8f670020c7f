//! EagleRank: a multi-tenant, real-time feed ranking service.
//!
//! Layers, each using only those below it: `http` → `actors` → domain (`candidates`,
//! `features`, `model`, `catalog`) → `store` → `telemetry`; plus `config`, `tenants`, `sim`.

pub mod actors;
pub mod api;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod learning;
pub mod ranking;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tools;

/// The hash map of the request path (candidate merging, store lookups, affinities): SipHash,
/// the standard one, was ~7 % of a cheap model's feed CPU. foldhash is still seeded per map.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
