//! A single node's connection: one multiplexed connection per thread that talks to Redis,
//! shared by every call on that thread.
//!
//! redis-rs's multiplexed connection pipelines whatever its callers send: the commands of the
//! feeds in flight on a thread go out in one write and their replies come back in one read.
//! A pool handing each call a connection of its own (what this replaced) sent every feed's
//! commands alone. Measured with `loadtest/alternate --redis` (README, Performance): Redis's
//! CPU per feed −26 %, the service's −4 %, feeds per second +5 %.
//!
//! A connection whose call timed out, or whose socket failed, is forgotten: the thread's next
//! call opens a new one. After a failover the old peer may never answer again, so waiting on it
//! would never heal; the calls still holding the old connection finish or time out on their
//! own. A server's error reply (a script error, a wrong type) is the caller's: the connection
//! is fine. Opening one is shared too: the calls arriving meanwhile await the same connect
//! (bounded by `redis.connect_timeout_ms`), and count as waiters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use redis::aio::MultiplexedConnection;

use super::unavailable;
use crate::store::{PoolStatus, StoreError};

type Opening = Shared<BoxFuture<'static, Result<MultiplexedConnection, String>>>;

pub(super) struct ThreadConnection {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    slot: Mutex<Slot>,
    /// Calls holding the connection: sent, not yet answered.
    in_flight: AtomicUsize,
    /// Calls waiting for the connection to open.
    waiting: AtomicUsize,
}

/// The connection (or its opening), numbered: a failed call forgets the connection only if
/// it is still the one the call used.
#[derive(Default)]
struct Slot {
    current: Option<(u64, Opening)>,
    /// The number the next connection opened gets.
    next: u64,
}

/// Counts a call in a gauge while it lives (a cancelled request drops it too).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ThreadConnection {
    pub fn new(client: redis::Client, config: redis::AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            slot: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Runs `pipe` on the thread's connection (opened first if need be), bounded by
    /// `timeout`; forgets the connection if the call found it broken.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        timeout: std::time::Duration,
        pipe: &redis::Pipeline,
    ) -> Result<Result<redis::RedisResult<T>, tokio::time::error::Elapsed>, StoreError> {
        let (generation, mut connection) = self.connection().await?;
        let answer = {
            let _busy = Counted::new(&self.in_flight);
            tokio::time::timeout(timeout, pipe.query_async(&mut connection)).await
        };
        let broken = match &answer {
            Err(_) => true,
            Ok(Err(e)) => e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout(),
            Ok(Ok(_)) => false,
        };
        if broken {
            self.forget(generation);
        }
        Ok(answer)
    }

    async fn connection(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let (generation, opening) = {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            let Slot { current, next } = &mut *slot;
            current
                .get_or_insert_with(|| {
                    *next += 1;
                    (*next, self.open())
                })
                .clone()
        };
        if let Some(Ok(open)) = opening.peek() {
            return Ok((generation, open.clone()));
        }
        let opened = {
            let _waiting = Counted::new(&self.waiting);
            opening.await
        };
        match opened {
            Ok(connection) => Ok((generation, connection)),
            Err(e) => {
                self.forget(generation);
                Err(unavailable(e))
            }
        }
    }

    fn open(&self) -> Opening {
        let client = self.client.clone();
        let config = self.config.clone();
        async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
        .shared()
    }

    fn forget(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.current.as_ref().is_some_and(|(g, _)| *g == generation) {
            slot.current = None;
        }
    }

    /// For `RedisStore::pool_status`: the connection if open, idle unless a call is in flight.
    pub fn status(&self) -> PoolStatus {
        let open = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .as_ref()
            .is_some_and(|(_, opening)| matches!(opening.peek(), Some(Ok(_))));
        let in_use = open && self.in_flight.load(Ordering::Relaxed) > 0;
        PoolStatus {
            connections: usize::from(open),
            idle: usize::from(open && !in_use),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}
