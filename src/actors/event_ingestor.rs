//! `EventIngestor`: applies event batches, one batch at a time (so deduplication sees every
//! earlier batch), through the shared `ingest::Ingestor`.

use std::sync::Arc;

use actix::prelude::*;

use super::lifecycle::{Lifecycle, guarded, supervised_actor};
use super::{ActorHealth, FeedError};
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

impl Lifecycle for EventIngestor {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.health
    }
}

supervised_actor!(EventIngestor, panics = async);

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
        AtomicResponse::new(guarded(self, span, async move {
            Ok(ingestor.apply(&msg.tenant, msg.events, msg.source).await?)
        }))
    }
}
