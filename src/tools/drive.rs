//! `eaglerank drive`: simulated users on a *running* service. Each request asks the service
//! for a user's feed, the click model reacts to the items in the order served, and the
//! impressions, clicks and purchases go back to the events API with the feed's `request_id` —
//! so live ranking quality (CTR@k, MRR) and drift move as they would in production.
//! `--shift` rotates every user's favourite categories: their profiles (built from past
//! behaviour) now point the wrong way, which is what a change in preferences looks like.

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::demo::marketplace::{HiddenTaste, Marketplace};
use crate::domain::EventKind;
use crate::ingest::{EventInput, now_rfc3339};

#[derive(Debug, Clone, clap::Args)]
pub struct DriveArgs {
    /// The running service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The tenant's API key.
    #[arg(long, env = "EAGLERANK_API_KEY")]
    pub key: String,
    #[arg(long, default_value = "demo-a")]
    pub tenant: String,
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Rotate every user's category preferences before driving.
    #[arg(long)]
    pub shift: bool,
    /// Drive only the first N demo users (0: all): few users see many feeds each, which is
    /// where repeats and fatigue show.
    #[arg(long, default_value_t = 0)]
    pub users: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct DriveReport {
    pub requests: usize,
    pub impressions: usize,
    pub clicks: usize,
    pub purchases: usize,
    /// Clicks per impression: what the click model made of the feeds served.
    pub ctr: f64,
    /// Share of impressions of an item the user had been shown before without acting on it.
    pub repeat_share: f64,
    /// Mean number of items sharing a brand with the item right above them, per feed.
    pub same_brand_adjacent: f64,
    /// Per experiment arm (as the service assigned it), when the tenant runs an experiment.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub arms: std::collections::BTreeMap<String, ArmDrive>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct ArmDrive {
    pub requests: usize,
    pub impressions: usize,
    pub clicks: usize,
    pub purchases: usize,
    pub ctr: f64,
}

#[derive(Deserialize)]
struct FeedItem {
    item_id: String,
}

#[derive(Deserialize)]
struct FeedBody {
    request_id: String,
    items: Vec<FeedItem>,
    #[serde(default)]
    arm: Option<String>,
}

/// The same tastes, with category weights moved to other categories.
fn shifted(taste: &HiddenTaste) -> HiddenTaste {
    let mut category = taste.category.clone();
    let half = category.len() / 2;
    category.rotate_right(half.max(1));
    HiddenTaste {
        category,
        ..taste.clone()
    }
}

pub async fn run(settings: &Settings, args: &DriveArgs) -> anyhow::Result<DriveReport> {
    // The service's demo world: same settings, same seed, same users and items.
    let anchor = settings
        .store
        .demo
        .anchor
        .unwrap_or_else(crate::domain::unix_now);
    let market = Marketplace::generate(&settings.store.demo, &args.tenant, anchor);
    let base = args.url.trim_end_matches('/');
    let client = reqwest::Client::new();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut report = DriveReport::default();
    let run = format!("{:x}", (crate::domain::unix_now() * 1e3) as u64);
    // What each user has been shown without acting on it: the click model tires of repeats.
    let mut shown: std::collections::HashMap<(usize, usize), u32> = Default::default();
    let (mut repeats, mut adjacent) = (0usize, 0usize);
    for request in 0..args.requests {
        let population = match args.users {
            0 => market.users.len(),
            n => n.min(market.users.len()),
        };
        let u = rng.random_range(0..population);
        let (user, taste) = &market.users[u];
        let taste = if args.shift {
            shifted(taste)
        } else {
            taste.clone()
        };
        let res = client
            .get(format!(
                "{base}/v1/tenants/{}/feed?user_id={user}&limit={}",
                args.tenant, args.limit
            ))
            .bearer_auth(&args.key)
            .send()
            .await
            .with_context(|| format!("asking {base} for a feed"))?;
        anyhow::ensure!(res.status().is_success(), "feed: {}", res.text().await?);
        let feed: FeedBody = res.json().await?;
        let now = now_rfc3339();
        let mut events = Vec::new();
        let mut event = |kind, item: &str| {
            let n = events.len();
            events.push(EventInput {
                event_id: format!("drive-{run}-{request}-{n}"),
                kind,
                user_id: user.clone(),
                item_id: item.to_owned(),
                timestamp: now.clone(),
                request_id: Some(feed.request_id.clone()),
            });
        };
        let (impressions, clicks, purchases) =
            (report.impressions, report.clicks, report.purchases);
        let mut above: Vec<usize> = Vec::with_capacity(feed.items.len());
        for (position, item) in feed.items.iter().enumerate() {
            let Some(i) = market.index_of(&item.item_id) else {
                continue;
            };
            event(EventKind::Impression, &item.item_id);
            report.impressions += 1;
            let before = shown.entry((u, i)).or_default();
            repeats += usize::from(*before > 0);
            adjacent += usize::from(
                above
                    .last()
                    .is_some_and(|j| market.brand_of(*j) == market.brand_of(i)),
            );
            let p = market.click_probability_in_feed(&taste, i, position, *before, &above);
            *before += 1;
            above.push(i);
            if rng.random_bool(p) {
                shown.remove(&(u, i));
                event(EventKind::Click, &item.item_id);
                report.clicks += 1;
                if rng.random_bool(market.purchase_probability(&taste, i)) {
                    // A purchase goes through the cart.
                    event(EventKind::AddToCart, &item.item_id);
                    event(EventKind::Purchase, &item.item_id);
                    report.purchases += 1;
                }
            }
        }
        let res = client
            .post(format!("{base}/v1/tenants/{}/events", args.tenant))
            .bearer_auth(&args.key)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "events: {}", res.text().await?);
        report.requests += 1;
        if let Some(arm) = feed.arm {
            let a = report.arms.entry(arm).or_default();
            a.requests += 1;
            a.impressions += report.impressions - impressions;
            a.clicks += report.clicks - clicks;
            a.purchases += report.purchases - purchases;
        }
    }
    for a in report.arms.values_mut() {
        a.ctr = a.clicks as f64 / a.impressions.max(1) as f64;
    }
    report.ctr = report.clicks as f64 / report.impressions.max(1) as f64;
    report.repeat_share = repeats as f64 / report.impressions.max(1) as f64;
    report.same_brand_adjacent = adjacent as f64 / report.requests.max(1) as f64;
    Ok(report)
}
