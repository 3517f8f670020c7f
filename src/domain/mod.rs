//! The marketplace's plain types: items and their statistics, interaction events, user
//! profiles, identifier rules and tenants. Data and pure functions only: this layer imports
//! nothing else of the crate, and everything else builds on it.

pub mod budget;
mod event;
mod history;
pub mod ids;
mod item;
pub mod tenants;
mod user;

pub use event::{Event, EventKind};
pub use history::{HISTORY_HORIZON_SECONDS, History, HistoryBuilder};
pub use item::{
    ITEM_COLUMNS, Item, ItemColumns, ItemDerived, ItemId, ItemPatch, ItemRecord, ItemStats,
    WINDOWS, WindowCounts, growth, key_hash, table_bytes,
};
pub use user::{
    AFFINITY_NAMES, Affinities, HISTORY_IMPRESSIONS, HISTORY_ITEMS, Profile, ProfileItem, Touched,
    UserProfile,
};
pub mod rules;

/// Seconds since the Unix epoch, as the model's time features use them.
pub type UnixSeconds = f64;

/// The wall clock, in the unit every timestamp of the domain uses.
pub fn unix_now() -> UnixSeconds {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
/// Trending scores halve every day: yesterday's purchases count half as much as today's.
pub const TRENDING_HALF_LIFE_SECONDS: f64 = 86_400.0;
/// Trending scores are stored relative to this instant (2026-01-01T00:00:00Z): an event at
/// time t adds `weight * 2^((t - epoch) / half-life)`, so scores only ever grow by addition
/// (an atomic ZINCRBY in Redis), and their order never depends on the time of reading.
/// f64 holds 2^1023: the epoch must be moved forward (all scores rescaled) before 1023
/// half-lives pass, i.e. before 2028-10.
pub const TRENDING_EPOCH: UnixSeconds = 1_767_225_600.0;
/// How many recently interacted items a profile remembers.
pub const RECENT_ITEMS: usize = 50;
#[cfg(test)]
mod tests;
