//! What a tenant keeps, per budgeted component: its items and users (from the feature
//! store), its served feeds (from the feed log) and its rules (the stored document, else the
//! configured one). Read periodically by the usage reporter, never on a request's path.

use super::{StoreContext, StoreError, Usage};
use crate::domain::budget::Component;
use crate::domain::rules::Rules;

/// `tenant`'s usage per component; the feed log's only where the log can count it.
pub async fn measure(
    store: &StoreContext,
    tenant: &str,
    configured_rules: &Rules,
) -> Result<Vec<(Component, Usage)>, StoreError> {
    let kept = store.store.usage(tenant).await?;
    let mut usage = vec![
        (Component::Items, kept.items),
        (Component::Users, kept.users),
    ];
    if let Some(feeds) = store.feed_log.held(tenant).await? {
        usage.push((Component::FeedLog, feeds));
    }
    let (entries, bytes) = match store.rules.rules(tenant).await? {
        // Stored documents were validated when they were put.
        Some(stored) => (
            Rules::parse(stored.document.as_bytes()).map_or(0, |r| r.entries()),
            stored.document.len(),
        ),
        None => (
            configured_rules.entries(),
            serde_json::to_string(configured_rules).map_or(0, |s| s.len()),
        ),
    };
    usage.push((
        Component::Rules,
        Usage {
            entries: entries as u64,
            bytes: bytes as u64,
        },
    ));
    Ok(usage)
}
