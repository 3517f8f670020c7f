//! Whether the store is reachable, as the Redis watchdog last saw it. The embedded store is
//! always up. Readiness and the feed's degraded mode read this; nothing here does I/O.

use std::sync::RwLock;

pub struct StoreHealth {
    backend: &'static str,
    /// `None` while up; the reason while down.
    down: RwLock<Option<String>>,
}

impl StoreHealth {
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            down: RwLock::new(None),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn is_up(&self) -> bool {
        self.down_reason().is_none()
    }

    pub fn down_reason(&self) -> Option<String> {
        self.down.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the latest observation; returns whether the state changed.
    pub fn set(&self, down: Option<String>) -> bool {
        let mut state = self.down.write().unwrap_or_else(|e| e.into_inner());
        let changed = state.is_some() != down.is_some();
        *state = down;
        changed
    }
}
