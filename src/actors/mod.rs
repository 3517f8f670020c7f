//! The actor layer: concurrency, supervision, deadlines and message flow around the plain
//! domain code. See `supervisor` for who starts whom.

mod actor_health;
mod candidate_fetcher;
mod event_ingestor;
mod gateway;
mod kafka_consumer;
mod lanes;
mod model_watchdog;
mod ranker;
mod redis_watchdog;
mod supervisor;

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use tracing::{Instrument, Span};

use crate::ranking::model::ModelError;
use crate::store::StoreError;

pub use actor_health::{ActorHealth, ActorStatus};
pub use candidate_fetcher::{CandidateFetcher, FetchCandidates};
pub use event_ingestor::{EventIngestor, IngestEvents};
pub use gateway::{Feed, FeedOutcome, Gateway, RankedItem, StageTimings};
pub use kafka_consumer::{KafkaConsumer, Pause};
pub use lanes::{Lane, Lanes};
pub use model_watchdog::{ModelWatchdog, ReloadModel, ReloadReport};
pub use ranker::{Rank, Ranker, Ranking};
pub use redis_watchdog::RedisWatchdog;
pub use supervisor::ActorSystem;

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

/// Sent to any actor by tests (and chaos drills) to prove that a panic inside a handler
/// becomes a supervised restart.
#[derive(Message)]
#[rtype(result = "Result<(), FeedError>")]
pub struct InjectPanic;

/// Liveness probe: answered by an actor whose mailbox is being served.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Asks a supervised actor to stop for good (at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Runs a handler's async work inside `span`. Actix would lose the actor (and its
/// supervisor) to a panic, so a panic here is caught, reported on the span that was active,
/// and turned into a stop: the supervisor restarts the actor and the caller gets `Crashed`
/// instead of a dead mailbox.
fn guarded<A, T, F>(
    name: &'static str,
    health: Arc<ActorHealth>,
    span: Span,
    work: F,
) -> ResponseActFuture<A, Result<T, FeedError>>
where
    A: Actor<Context = Context<A>>,
    F: Future<Output = Result<T, FeedError>> + 'static,
    T: 'static,
{
    let work = AssertUnwindSafe(work.instrument(span.clone())).catch_unwind();
    Box::pin(
        actix::fut::wrap_future::<_, A>(work).map(move |outcome, _actor, ctx| match outcome {
            Ok(result) => result,
            Err(panic) => {
                span.in_scope(|| health.panicked(name, &panic_message(&*panic)));
                span.record("otel.status_code", "ERROR");
                ctx.stop();
                Err(FeedError::Crashed(name))
            }
        }),
    )
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
