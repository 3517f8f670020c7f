//! What every supervised actor does the same way, in one place: report its start, stop and
//! restart to the [`ActorHealth`] board (readiness and `eaglerank_actor_*` read it), answer
//! [`Ping`] and [`Stop`], and turn a panic inside a handler into a supervised restart. An actor
//! implements [`Lifecycle`] (its name, its health board, its own start-up) and invokes
//! [`supervised_actor!`]: it cannot forget to report health, and states only its own logic.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use actix::prelude::*;
use futures::FutureExt;
use tracing::{Instrument, Span};

use super::{ActorHealth, FeedError};

/// An actor's own part of its lifecycle; [`supervised_actor!`] writes the rest.
pub trait Lifecycle: Actor<Context = Context<Self>> {
    /// The actor's name in health, metrics and logs (a bounded label value).
    const NAME: &'static str;

    fn health(&self) -> &Arc<ActorHealth>;

    /// After the start is reported, at the first start and after every restart: timers,
    /// connections, mailbox capacity.
    fn on_started(&mut self, _ctx: &mut Context<Self>) {}

    /// Before the start is reported down.
    fn on_stopped(&mut self) {}

    /// [`Stop`] received (shutdown): release, before the sender hears back, what must not be
    /// dropped by a thread racing the process's exit (ONNX Runtime sessions).
    fn on_stop(&mut self) {}

    /// When the supervisor restarts the actor in place, before `on_started`: drop what may
    /// have caused the failure. Neither hook runs for a restart during shutdown.
    fn on_restarting(&mut self) {}
}

/// Implements `Actor`, `Supervised`, `Handler<Ping>` and `Handler<Stop>` for an actor that
/// implements [`Lifecycle`]. With `panics = async` or `panics = sync`, also
/// `Handler<InjectPanic>`, through the guard its other handlers use.
macro_rules! supervised_actor {
    ($actor:ty) => {
        impl ::actix::Actor for $actor {
            type Context = ::actix::Context<Self>;

            fn started(&mut self, ctx: &mut Self::Context) {
                let health = $crate::actors::lifecycle::Lifecycle::health(self).clone();
                health.started(<Self as $crate::actors::lifecycle::Lifecycle>::NAME);
                // actix's Supervisor restarts an actor stopped while an address is alive, also
                // at shutdown: that restart must do nothing (no timers, no ONNX session built
                // on a worker thread while the process exits).
                if !health.shutting_down() {
                    $crate::actors::lifecycle::Lifecycle::on_started(self, ctx);
                }
            }

            fn stopped(&mut self, _: &mut Self::Context) {
                $crate::actors::lifecycle::Lifecycle::on_stopped(self);
                $crate::actors::lifecycle::Lifecycle::health(self)
                    .stopped(<Self as $crate::actors::lifecycle::Lifecycle>::NAME);
            }
        }

        impl ::actix::Supervised for $actor {
            fn restarting(&mut self, _: &mut Self::Context) {
                let health = $crate::actors::lifecycle::Lifecycle::health(self).clone();
                health.restarted(<Self as $crate::actors::lifecycle::Lifecycle>::NAME);
                if !health.shutting_down() {
                    $crate::actors::lifecycle::Lifecycle::on_restarting(self);
                }
            }
        }

        impl ::actix::Handler<$crate::actors::Ping> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::Ping, _: &mut Self::Context) {}
        }

        impl ::actix::Handler<$crate::actors::Stop> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::Stop, ctx: &mut Self::Context) {
                $crate::actors::lifecycle::Lifecycle::on_stop(self);
                ::actix::ActorContext::stop(ctx);
            }
        }
    };
    ($actor:ty, panics = async) => {
        supervised_actor!($actor);

        impl ::actix::Handler<$crate::actors::InjectPanic> for $actor {
            type Result = ::actix::ResponseActFuture<Self, Result<(), $crate::actors::FeedError>>;

            fn handle(
                &mut self,
                _: $crate::actors::InjectPanic,
                _: &mut Self::Context,
            ) -> Self::Result {
                $crate::actors::lifecycle::guarded(self, ::tracing::Span::none(), async {
                    panic!("injected panic")
                })
            }
        }
    };
    ($actor:ty, panics = sync) => {
        supervised_actor!($actor);

        impl ::actix::Handler<$crate::actors::InjectPanic> for $actor {
            type Result = Result<(), $crate::actors::FeedError>;

            fn handle(
                &mut self,
                _: $crate::actors::InjectPanic,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                $crate::actors::lifecycle::guarded_sync(self, ctx, |_| panic!("injected panic"))
            }
        }
    };
}
pub(crate) use supervised_actor;

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

pub fn panic_message(panic: &(dyn Any + Send)) -> String {
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
pub fn guarded<A, T, F>(
    actor: &A,
    span: Span,
    work: F,
) -> ResponseActFuture<A, Result<T, FeedError>>
where
    A: Lifecycle,
    F: Future<Output = Result<T, FeedError>> + 'static,
    T: 'static,
{
    let (name, health) = (A::NAME, actor.health().clone());
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

/// The synchronous twin of [`guarded`], for an actor whose handler does its work in place (the
/// ranker): a panic stops the actor, and its supervisor restarts it (`on_restarting`).
pub fn guarded_sync<A: Lifecycle, T>(
    actor: &mut A,
    ctx: &mut Context<A>,
    work: impl FnOnce(&mut A) -> Result<T, FeedError>,
) -> Result<T, FeedError> {
    match catch_unwind(AssertUnwindSafe(|| work(actor))) {
        Ok(result) => result,
        Err(panic) => {
            actor.health().panicked(A::NAME, &panic_message(&*panic));
            ctx.stop();
            Err(FeedError::Crashed(A::NAME))
        }
    }
}
