//! `UsageReporter`: measures what each tenant keeps (items, users, served feeds, rules) every
//! `budgets.report_interval_ms` and exports it beside the tenant's budget
//! (`eaglerank_tenant_entries`, `_memory_bytes`, `_budget_entries`). The measuring is plain
//! code (`store::usage`); this actor only owns the interval and keeps one round at a time.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::ActorHealth;
use super::lifecycle::{Lifecycle, supervised_actor};
use crate::domain::budget::{Budget, Component};
use crate::domain::rules::Rules;
use crate::store::StoreContext;
use crate::telemetry::events::{FeedLogTrimmed, StoreUsageFailed, TenantUsageMeasured};
use crate::telemetry::{InternalEvent, Metrics};

pub const NAME: &str = "usage_reporter";

/// One tenant as the reporter needs it.
pub struct Tenant {
    pub id: String,
    pub budget: Budget,
    /// Its rules until some are stored through the API.
    pub rules: Rules,
}

pub struct UsageReporter {
    store: StoreContext,
    tenants: Arc<Vec<Tenant>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    actors: Arc<ActorHealth>,
    in_flight: bool,
}

impl UsageReporter {
    pub fn new(
        store: StoreContext,
        tenants: Arc<Vec<Tenant>>,
        interval: Duration,
        metrics: Arc<Metrics>,
        actors: Arc<ActorHealth>,
    ) -> Self {
        Self {
            store,
            tenants,
            interval,
            metrics,
            actors,
            in_flight: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // A slow store must not pile rounds up behind each other.
        if self.in_flight {
            return;
        }
        self.in_flight = true;
        let (store, tenants, metrics) = (
            self.store.clone(),
            self.tenants.clone(),
            self.metrics.clone(),
        );
        let round = async move {
            for tenant in tenants.iter() {
                match crate::store::usage::measure(&store, &tenant.id, &tenant.rules).await {
                    Ok(usage) => {
                        for (component, usage) in &usage {
                            TenantUsageMeasured {
                                tenant: &tenant.id,
                                component: component.as_str(),
                                entries: usage.entries,
                                bytes: usage.bytes,
                                budget: tenant.budget.limit(*component),
                            }
                            .emit(&metrics);
                        }
                        // A log that cannot bound a tenant as it records (Redis, written by
                        // every replica) is trimmed here, its oldest feeds first.
                        let feeds = usage.iter().find(|(c, _)| *c == Component::FeedLog);
                        if let (Some(limit), Some((_, feeds))) =
                            (tenant.budget.limit(Component::FeedLog), feeds)
                            && feeds.entries > limit
                        {
                            match store.feed_log.trim(&tenant.id, limit).await {
                                Ok(evicted) => FeedLogTrimmed {
                                    tenant: &tenant.id,
                                    evicted,
                                }
                                .emit(&metrics),
                                Err(e) => StoreUsageFailed {
                                    tenant: &tenant.id,
                                    error: &e,
                                }
                                .emit(&metrics),
                            }
                        }
                    }
                    Err(e) => StoreUsageFailed {
                        tenant: &tenant.id,
                        error: &e,
                    }
                    .emit(&metrics),
                }
            }
        };
        ctx.spawn(
            round
                .into_actor(self)
                .map(|(), act, _| act.in_flight = false),
        );
    }
}

impl Lifecycle for UsageReporter {
    const NAME: &'static str = NAME;

    fn health(&self) -> &Arc<ActorHealth> {
        &self.actors
    }

    fn on_started(&mut self, ctx: &mut Context<Self>) {
        self.in_flight = false;
        self.tick(ctx);
        ctx.run_interval(self.interval, Self::tick);
    }
}

supervised_actor!(UsageReporter);
