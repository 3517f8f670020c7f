//! The actor layer: concurrency, supervision, deadlines and message flow around the plain
//! domain code. See `supervisor` for who starts whom.

mod actor_health;
mod candidate_fetcher;
mod event_ingestor;
mod gateway;
mod kafka_consumer;
mod lanes;
mod lifecycle;
mod model_watchdog;
mod ranker;
mod redis_watchdog;
mod supervisor;
mod usage_reporter;

use std::time::Duration;

use actix::prelude::*;

use crate::ranking::model::ModelError;
use crate::store::StoreError;

pub use actor_health::{ActorHealth, ActorStatus};
pub use candidate_fetcher::{CandidateFetcher, FetchCandidates};
pub use event_ingestor::{EventIngestor, IngestEvents};
pub use gateway::{Feed, FeedOutcome, Gateway, RankedItem, StageTimings};
pub use kafka_consumer::{KafkaConsumer, Pause};
pub use lanes::{Lane, Lanes};
pub use lifecycle::{InjectPanic, Ping, Stop};
pub use model_watchdog::{ModelWatchdog, ReloadModel, ReloadReport};
pub use ranker::{Rank, Ranker, Ranking, RulesReport};
pub use redis_watchdog::RedisWatchdog;
pub use supervisor::ActorSystem;
pub use usage_reporter::UsageReporter;

/// Why a feed request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the request deadline of {0:?} was exceeded")]
    DeadlineExceeded(Duration),
    #[error("the {actor} actor is unavailable: {source}")]
    Mailbox {
        actor: &'static str,
        source: MailboxError,
    },
    #[error("the {0} actor failed while handling the request and is being restarted")]
    Crashed(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Awaits an actor's reply, turning mailbox failures into [`FeedError::Mailbox`].
async fn ask<A, M, T>(actor: &'static str, addr: &Addr<A>, msg: M) -> Result<T, FeedError>
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message<Result = Result<T, FeedError>> + Send + 'static,
    T: Send + 'static,
{
    addr.send(msg)
        .await
        .map_err(|source| FeedError::Mailbox { actor, source })?
}
