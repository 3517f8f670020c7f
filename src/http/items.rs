//! `POST /v1/tenants/{tenant}/items`: bulk upsert of catalog items. The whole batch is
//! validated first; one bad item rejects the batch with every problem listed, and nothing of
//! it is written. `GET /v1/tenants/{tenant}/items/{item_id}`: one item with the statistics
//! events have given it, to watch features move.

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::auth::AuthorizedTenant;
use super::error::{ApiError, Detail, TenantErrors};
use crate::api::AppState;
use crate::domain::ids::check_id;
use crate::domain::{EventKind, Item, ItemPatch, ItemStats, UnixSeconds, WINDOWS, unix_now};
use crate::ranking::features::smoothed_ctr;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::ItemsUpserted;

pub const MAX_ITEMS_PER_CALL: usize = 1000;
const MAX_LABEL_LEN: usize = 64;
const MAX_ATTRIBUTES: usize = 64;

#[derive(Deserialize, ToSchema)]
pub struct UpsertItems {
    /// Kept as raw values so that a malformed item is reported by its index.
    #[schema(value_type = Vec<ItemInput>, min_items = 1, max_items = 1000)]
    items: Vec<Value>,
}

/// A catalog item as clients send it.
#[derive(Deserialize, ToSchema)]
pub(super) struct ItemInput {
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    item_id: String,
    #[schema(min_length = 1, max_length = 64)]
    category: String,
    #[schema(min_length = 1, max_length = 64)]
    brand: String,
    #[schema(minimum = 0)]
    price: f64,
    /// RFC 3339; defaults to the time of the call.
    #[schema(format = DateTime)]
    created_at: Option<String>,
    /// At most 64.
    #[serde(default)]
    #[schema(value_type = Object)]
    attributes: Map<String, Value>,
    /// Sold out or withdrawn items are never served (default true).
    #[serde(default = "yes")]
    available: bool,
    /// The seller's user id, where users sell (`exclude_own_items`).
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    seller_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
pub(super) struct Upserted {
    upserted: usize,
}

/// Interaction counts, and the smoothed click-through rate.
#[derive(Serialize, ToSchema)]
pub(super) struct Counts {
    impressions: f64,
    clicks: f64,
    add_to_carts: f64,
    purchases: f64,
    ctr: f64,
}

/// What events have given an item.
#[derive(Serialize, ToSchema)]
pub(super) struct Stats {
    all_time: Counts,
    /// By window: `1h`, `24h`, `7d`.
    windows: BTreeMap<&'static str, Counts>,
    trending: f64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ItemWithStats<'a> {
    #[schema(value_type = Item)]
    item: &'a Item,
    stats: Stats,
}

fn label(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_LABEL_LEN {
        return Err(format!("{field} must be 1-{MAX_LABEL_LEN} characters"));
    }
    Ok(())
}

fn parse_item(raw: Value, now: i64) -> Result<Item, String> {
    let input: ItemInput = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    check_id("item_id", &input.item_id)?;
    label("category", &input.category)?;
    label("brand", &input.brand)?;
    check_price(input.price)?;
    let created_at = match &input.created_at {
        None => now,
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("created_at must be an RFC 3339 timestamp: {e}"))?
            .unix_timestamp(),
    };
    check_attributes(&input.attributes)?;
    if let Some(s) = &input.seller_id {
        check_id("seller_id", s)?;
    }
    Ok(Item {
        item_id: input.item_id.into(),
        category: input.category,
        brand: input.brand,
        price: input.price,
        created_at,
        attributes: input.attributes,
        available: input.available,
        seller_id: input.seller_id,
    })
}

fn check_price(price: f64) -> Result<(), String> {
    if !price.is_finite() || price < 0.0 {
        return Err("price must be a finite number >= 0".into());
    }
    Ok(())
}

fn check_attributes(attributes: &Map<String, Value>) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!("at most {MAX_ATTRIBUTES} attributes per item"));
    }
    Ok(())
}

/// Changes an item's availability, price or attributes without resending it. Every replica
/// serves the change within `cache.item_ttl_ms`: an unavailable item is never served after
/// that, by any page, pin or the degraded fallback.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/items/{item_id}",
    tag = "catalog",
    params(
        ("tenant" = String, Path, description = "The tenant (marketplace) id."),
        ("item_id" = String, Path, description = "The item id."),
    ),
    request_body = ItemPatch,
    responses((status = 200, description = "The item as it is now.", body = Item), TenantErrors),
    security(("bearer" = [])),
)]
pub async fn patch_item(
    AuthorizedTenant(tenant): AuthorizedTenant,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, item_id) = path.into_inner();
    check_id("item_id", &item_id).map_err(ApiError::invalid)?;
    let patch: ItemPatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("invalid patch: {e}")))?;
    if patch.is_empty() {
        return Err(ApiError::invalid(
            "a patch changes at least one of available, price, attributes",
        ));
    }
    if let Some(p) = patch.price {
        check_price(p).map_err(ApiError::invalid)?;
    }
    if let Some(a) = &patch.attributes {
        check_attributes(a).map_err(ApiError::invalid)?;
    }
    let item = state
        .store
        .patch_item(&tenant.id, &item_id, &patch)
        .await?
        .ok_or_else(|| no_item(&tenant.id, &item_id))?;
    ItemsUpserted {
        tenant: &tenant.id,
        count: 1,
    }
    .emit(&state.metrics);
    Ok(HttpResponse::Ok().json(item))
}

/// Adds or replaces catalog items: the whole batch is validated first, and one bad item rejects
/// it with every problem listed; nothing of it is written.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/items",
    tag = "catalog",
    params(("tenant" = String, Path, description = "The tenant (marketplace) id.")),
    request_body = UpsertItems,
    responses((status = 200, description = "Written.", body = Upserted), TenantErrors),
    security(("bearer" = [])),
)]
pub async fn upsert_items(
    AuthorizedTenant(tenant): AuthorizedTenant,
    body: web::Json<UpsertItems>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = body.into_inner().items;
    if raw.is_empty() || raw.len() > MAX_ITEMS_PER_CALL {
        return Err(ApiError::invalid(format!(
            "items must hold 1 to {MAX_ITEMS_PER_CALL} items, got {}",
            raw.len()
        )));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut items = Vec::with_capacity(raw.len());
    let mut details = Vec::new();
    let mut seen = HashSet::new();
    for (index, value) in raw.into_iter().enumerate() {
        match parse_item(value, now) {
            Ok(item) if !seen.insert(item.item_id.clone()) => details.push(Detail::at(
                index,
                format!("duplicate item_id {:?} in this batch", item.item_id),
            )),
            Ok(item) => items.push(item),
            Err(reason) => details.push(Detail::at(index, reason)),
        }
    }
    if !details.is_empty() {
        return Err(ApiError::InvalidArgument {
            message: format!("{} invalid item(s); nothing was written", details.len()),
            details,
        });
    }
    let count = items.len();
    state.store.upsert_items(&tenant.id, items).await?;
    ItemsUpserted {
        tenant: &tenant.id,
        count,
    }
    .emit(&state.metrics);
    Ok(HttpResponse::Ok().json(Upserted { upserted: count }))
}

/// Counts in [`EventKind`] order, as the API shows them.
fn counts(c: [f64; 4]) -> Counts {
    let [impressions, clicks, add_to_carts, purchases] = c;
    Counts {
        impressions,
        clicks,
        add_to_carts,
        purchases,
        ctr: smoothed_ctr(clicks, impressions),
    }
}

fn stats(s: &ItemStats, now: UnixSeconds) -> Stats {
    let all_time = [s.impressions, s.clicks, s.add_to_carts, s.purchases];
    debug_assert_eq!(EventKind::Purchase as usize, 3);
    Stats {
        all_time: counts(all_time),
        windows: WINDOWS
            .iter()
            .zip(s.windowed(now))
            .map(|((label, _), c)| (*label, counts(c)))
            .collect(),
        trending: s.trending_score(now),
    }
}

/// One item with the statistics events have given it.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/items/{item_id}",
    tag = "catalog",
    params(
        ("tenant" = String, Path, description = "The tenant (marketplace) id."),
        ("item_id" = String, Path, description = "The item id."),
    ),
    responses((status = 200, description = "The item and its statistics.", body = ItemWithStats), TenantErrors),
    security(("bearer" = [])),
)]
pub async fn get_item(
    AuthorizedTenant(tenant): AuthorizedTenant,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, item_id) = path.into_inner();
    check_id("item_id", &item_id).map_err(ApiError::invalid)?;
    let found = state
        .store
        .items(&tenant.id, &[item_id.as_str().into()])
        .await?
        .pop()
        .flatten()
        .ok_or_else(|| no_item(&tenant.id, &item_id))?;
    Ok(HttpResponse::Ok().json(ItemWithStats {
        stats: stats(found.stats(), unix_now()),
        item: &found.item,
    }))
}

/// The 404 of an item the tenant does not have.
fn no_item(tenant: &str, item_id: &str) -> ApiError {
    ApiError::NotFound(format!("no item {item_id:?} in tenant {tenant:?}"))
}
