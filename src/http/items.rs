//! `POST /v1/tenants/{tenant}/items`: bulk upsert of catalog items. The whole batch is
//! validated first; one bad item rejects the batch with every problem listed, and nothing of
//! it is written. `GET /v1/tenants/{tenant}/items/{item_id}`: one item with the statistics
//! events have given it, to watch features move.

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use super::auth::AuthorizedTenant;
use super::error::{ApiError, Detail};
use crate::domain::ids::check_id;
use crate::domain::{EventKind, Item, ItemStats, UnixSeconds, WINDOWS, unix_now};
use crate::ranking::features::smoothed_ctr;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::ItemsUpserted;

pub const MAX_ITEMS_PER_CALL: usize = 1000;
const MAX_LABEL_LEN: usize = 64;
const MAX_ATTRIBUTES: usize = 64;

#[derive(Deserialize)]
pub struct UpsertItems {
    /// Kept as raw values so that a malformed item is reported by its index.
    items: Vec<Value>,
}

#[derive(Deserialize)]
struct ItemInput {
    item_id: String,
    category: String,
    brand: String,
    price: f64,
    /// RFC 3339; defaults to the time of the call.
    created_at: Option<String>,
    #[serde(default)]
    attributes: Map<String, Value>,
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
    if !input.price.is_finite() || input.price < 0.0 {
        return Err("price must be a finite number >= 0".into());
    }
    let created_at = match &input.created_at {
        None => now,
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("created_at must be an RFC 3339 timestamp: {e}"))?
            .unix_timestamp(),
    };
    if input.attributes.len() > MAX_ATTRIBUTES {
        return Err(format!("at most {MAX_ATTRIBUTES} attributes per item"));
    }
    Ok(Item {
        item_id: input.item_id.into(),
        category: input.category,
        brand: input.brand,
        price: input.price,
        created_at,
        attributes: input.attributes,
    })
}

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
            Ok(item) if !seen.insert(item.item_id.clone()) => details.push(Detail {
                index,
                reason: format!("duplicate item_id {:?} in this batch", item.item_id),
            }),
            Ok(item) => items.push(item),
            Err(reason) => details.push(Detail { index, reason }),
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
    Ok(HttpResponse::Ok().json(json!({ "upserted": count })))
}

/// Counts in [`EventKind`] order, as the API shows them.
fn counts_json(c: [f64; 4]) -> Value {
    let [impressions, clicks, add_to_carts, purchases] = c;
    json!({
        "impressions": impressions,
        "clicks": clicks,
        "add_to_carts": add_to_carts,
        "purchases": purchases,
        "ctr": smoothed_ctr(clicks, impressions),
    })
}

fn stats_json(s: &ItemStats, now: UnixSeconds) -> Value {
    let all_time = [s.impressions, s.clicks, s.add_to_carts, s.purchases];
    debug_assert_eq!(EventKind::Purchase as usize, 3);
    let windows: Map<String, Value> = WINDOWS
        .iter()
        .zip(s.windowed(now))
        .map(|((label, _), c)| ((*label).to_owned(), counts_json(c)))
        .collect();
    json!({
        "all_time": counts_json(all_time),
        "windows": windows,
        "trending": s.trending_score(now),
    })
}

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
        .ok_or_else(|| {
            ApiError::NotFound(format!("no item {item_id:?} in tenant {:?}", tenant.id))
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "item": found.item,
        "stats": stats_json(&found.stats, unix_now()),
    })))
}
