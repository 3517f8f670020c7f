//! The last few errors, in memory, for the ops page (`/ops`): what an operator wants to read
//! before opening the logs. Written by the internal events of failures, bounded.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many errors are kept.
pub const RECENT_ERRORS: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    /// Unix seconds.
    pub at: f64,
    /// What failed: `feed`, `events`, `store`, …
    pub what: &'static str,
    pub tenant: String,
    /// The API error code or a short kind.
    pub code: &'static str,
    pub message: String,
}

#[derive(Default)]
pub struct RecentErrors(Mutex<VecDeque<RecentError>>);

impl RecentErrors {
    pub fn push(&self, what: &'static str, tenant: &str, code: &'static str, message: String) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RECENT_ERRORS {
            ring.pop_front();
        }
        // Messages come from errors, never from clients' bytes beyond a bounded id: capped
        // anyway, the page shows a line each.
        let message = message.chars().take(300).collect();
        ring.push_back(RecentError {
            at,
            what,
            tenant: tenant.to_owned(),
            code,
            message,
        });
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RecentError> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }
}
