//! `EventIngestor`: applies event batches, one batch at a time (so deduplication sees every
//! earlier batch), through the shared `ingest::Ingestor`.

use std::sync::Arc;

use actix::prelude::*;

use super::{ActorHealth, FeedError, InjectPanic, Stop, guarded};
use crate::ingest::{Applied, Ingestor, Source, ValidEvent};

pub const NAME: &str = "ingestor";

pub struct EventIngestor {
    ingestor: Arc<Ingestor>,
    health: Arc<ActorHealth>,
}

impl EventIngestor {
    pub fn new(ingestor: Arc<Ingestor>, health: Arc<ActorHealth>) -> Self {
        Self { ingestor, health }
    }
}

impl Actor for EventIngestor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.health.started(NAME);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.stopped(NAME);
    }
}

impl Supervised for EventIngestor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted(NAME);
    }
}

#[derive(Message)]
#[rtype(result = "Result<Applied, FeedError>")]
pub struct IngestEvents {
    pub tenant: Arc<str>,
    pub events: Vec<ValidEvent>,
    pub source: Source,
    pub span: tracing::Span,
}

impl Handler<IngestEvents> for EventIngestor {
    type Result = AtomicResponse<Self, Result<Applied, FeedError>>;

    fn handle(&mut self, msg: IngestEvents, _: &mut Context<Self>) -> Self::Result {
        let ingestor = self.ingestor.clone();
        let span = tracing::info_span!(
            parent: &msg.span,
            "events.apply",
            tenant = %msg.tenant,
            num_events = msg.events.len(),
            source = msg.source.as_str(),
            otel.status_code = tracing::field::Empty,
        );
        AtomicResponse::new(guarded(NAME, self.health.clone(), span, async move {
            Ok(ingestor.apply(&msg.tenant, msg.events, msg.source).await?)
        }))
    }
}

impl Handler<InjectPanic> for EventIngestor {
    type Result = ResponseActFuture<Self, Result<(), FeedError>>;

    fn handle(&mut self, _: InjectPanic, _: &mut Context<Self>) -> Self::Result {
        guarded(NAME, self.health.clone(), tracing::Span::none(), async {
            panic!("injected panic")
        })
    }
}

impl Handler<Stop> for EventIngestor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
