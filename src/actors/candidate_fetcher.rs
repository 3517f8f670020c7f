//! `CandidateFetcher`: runs the pipeline's candidate stage (plan, lists, merge) for one
//! request, on its lane's thread.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::lifecycle::{Lifecycle, guarded, supervised_actor};
use super::{ActorHealth, FeedError};
use crate::config::CandidateLimits;
use crate::domain::UserProfile;
use crate::ranking::candidates::Candidate;
use crate::ranking::pipeline;
use crate::store::SharedStore;
use crate::telemetry::events::{CandidatesFetched, MessageDequeued};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "candidates";

pub struct CandidateFetcher {
    store: SharedStore,
    /// Per-tenant limits, resolved from config once.
    limits: Arc<HashMap<String, CandidateLimits>>,
    metrics: Arc<Metrics>,
    health: Arc<ActorHealth>,
}

impl CandidateFetcher {
    pub fn new(
        store: SharedStore,
        limits: Arc<HashMap<String, CandidateLimits>>,
        metrics: Arc<Metrics>,
        health: Arc<ActorHealth>,
    ) -> Self {
        Self {
            store,
            limits,
            metrics,
            health,
        }
    }
}

impl Lifecycle for CandidateFetcher {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.health
    }
}

supervised_actor!(CandidateFetcher, panics = async);

#[derive(Message)]
#[rtype(result = "Result<Vec<Candidate>, FeedError>")]
pub struct FetchCandidates {
    pub tenant: Arc<str>,
    pub user: Option<Arc<UserProfile>>,
    /// The requester's span: this hop's span is its child.
    pub span: tracing::Span,
    /// When it was sent: its wait in the mailbox is measured from here.
    pub enqueued: std::time::Instant,
}

impl Handler<FetchCandidates> for CandidateFetcher {
    type Result = ResponseActFuture<Self, Result<Vec<Candidate>, FeedError>>;

    fn handle(&mut self, msg: FetchCandidates, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let limits = self.limits.get(&*msg.tenant).copied();
        let metrics = self.metrics.clone();
        MessageDequeued {
            actor: NAME,
            waited: msg.enqueued.elapsed(),
        }
        .emit(&metrics);
        let span = tracing::info_span!(
            parent: &msg.span,
            "candidates.fetch",
            tenant = %msg.tenant,
            num_candidates = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        guarded(self, span, async move {
            let limits = limits
                .ok_or_else(|| crate::store::StoreError::UnknownTenant(msg.tenant.to_string()))?;
            let (merged, stats) =
                pipeline::candidates(&*store, &msg.tenant, &limits, msg.user.as_deref()).await?;
            tracing::Span::current().record("num_candidates", merged.len());
            CandidatesFetched {
                tenant: &msg.tenant,
                count: merged.len(),
                fetch: stats.fetch,
                merge: stats.merge,
            }
            .emit(&metrics);
            Ok(merged)
        })
    }
}
