//! The feed response's JSON, written directly when it holds no `explain` field: byte for byte
//! what `serde_json` makes of [`FeedResponse`] (the tests compare them), at a fraction of the
//! cost. Through serde, every key and string goes through `serde_json`'s escaping writer, a
//! few writes each: ~1.4 k instructions a feed item for its four fields, ~35 k a feed of 20.
//! Here the keys are constants and a string is copied as it is when nothing in it needs
//! escaping (ids never do), else written by `serde_json`. With `explain=true` the response
//! goes through serde as before.

use std::sync::LazyLock;

use super::{FeedItem, FeedResponse, ModelRef};
use crate::ranking::candidates::{Source, Sources};

impl FeedResponse<'_> {
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        if self.explains() {
            return serde_json::to_vec(self);
        }
        let mut out = Vec::with_capacity(256 + 96 * self.items.len());
        out.extend_from_slice(b"{\"tenant\":");
        string(&mut out, self.tenant)?;
        out.extend_from_slice(b",\"user_id\":");
        string(&mut out, self.user_id)?;
        out.extend_from_slice(b",\"request_id\":");
        string(&mut out, self.request_id)?;
        out.extend_from_slice(b",\"model\":");
        model(&mut out, &self.model)?;
        if let Some(first) = &self.first_stage {
            out.extend_from_slice(b",\"first_stage\":");
            model(&mut out, first)?;
        }
        out.extend_from_slice(b",\"degraded\":");
        out.extend_from_slice(if self.degraded { b"true" } else { b"false" });
        if let Some(reason) = self.degraded_reason {
            out.extend_from_slice(b",\"degraded_reason\":");
            string(&mut out, reason)?;
        }
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            feed_item(&mut out, item)?;
        }
        out.extend_from_slice(b"],\"page\":");
        serde_json::to_writer(&mut out, &self.page)?;
        if let Some(cursor) = self.next_cursor {
            out.extend_from_slice(b",\"next_cursor\":");
            string(&mut out, cursor)?;
        }
        out.extend_from_slice(b",\"rules_version\":");
        serde_json::to_writer(&mut out, &self.rules_version)?;
        out.extend_from_slice(b",\"experiment\":");
        optional(&mut out, self.experiment)?;
        out.extend_from_slice(b",\"arm\":");
        optional(&mut out, self.arm)?;
        out.push(b'}');
        Ok(out)
    }

    /// Any `explain=true` field: those take the derived serialization.
    fn explains(&self) -> bool {
        self.rules_removed.is_some()
            || self.timings_ms.is_some()
            || self.items.iter().any(|i| {
                i.model_score.is_some()
                    || i.first_stage_score.is_some()
                    || i.rules.is_some()
                    || i.features.is_some()
            })
    }
}

fn feed_item(out: &mut Vec<u8>, item: &FeedItem<'_>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"item_id\":");
    string(out, item.item_id)?;
    out.extend_from_slice(b",\"score\":");
    // serde_json's own number formatting (and `null` for a non-finite score).
    serde_json::to_writer(&mut *out, &item.score)?;
    out.extend_from_slice(b",\"rank\":");
    serde_json::to_writer(&mut *out, &item.rank)?;
    out.extend_from_slice(b",\"sources\":");
    out.extend_from_slice(&SOURCES[usize::from(item.sources.bits())]);
    out.push(b'}');
    Ok(())
}

/// Every set of sources as serde_json writes it, by the set's bits: a copy per item.
static SOURCES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    (0..1u8 << Source::ALL.len())
        .map(|bits| serde_json::to_vec(&Sources::from_bits(bits)).expect("names serialize"))
        .collect()
});

fn model(out: &mut Vec<u8>, model: &ModelRef<'_>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"name\":");
    string(out, model.name)?;
    out.extend_from_slice(b",\"version\":");
    string(out, model.version)?;
    out.push(b'}');
    Ok(())
}

fn optional(out: &mut Vec<u8>, value: Option<&str>) -> serde_json::Result<()> {
    match value {
        Some(s) => string(out, s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// A JSON string: copied between quotes when no byte needs escaping (JSON escapes control
/// characters, `"` and `\`, as `serde_json` does), else written by `serde_json`.
fn string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(list: &[Source]) -> Sources {
        let mut s = Sources::default();
        for source in list {
            s.insert(*source);
        }
        s
    }

    fn item(id: &'static str, score: f32, rank: usize, from: &[Source]) -> FeedItem<'static> {
        FeedItem {
            item_id: id,
            score,
            rank,
            sources: sources(from),
            model_score: None,
            first_stage_score: None,
            rules: None,
            features: None,
        }
    }

    fn plain() -> FeedResponse<'static> {
        FeedResponse {
            tenant: "demo",
            user_id: "u42",
            request_id: "0b5c2a7e-8d1f-4c6a-9e3b-2f4d6a8c0e1f",
            model: ModelRef {
                name: "lgbm_ranker",
                version: "2026-12-01",
            },
            first_stage: None,
            degraded: false,
            degraded_reason: None,
            items: vec![
                item("i1", 0.812_345_7, 1, &[Source::Trending, Source::Affinity]),
                item("i2:x-y.z_w", -3.5e-7, 2, &Source::ALL),
                item("i3", 1e30, 3, &[]),
                item("i4", f32::NAN, 4, &[Source::NewArrivals]),
                item("i5", f32::NEG_INFINITY, 10_000, &[Source::Affinity]),
            ],
            page: 1,
            next_cursor: None,
            rules_version: 0,
            experiment: None,
            arm: None,
            rules_removed: None,
            timings_ms: None,
        }
    }

    fn assert_as_serde(response: &FeedResponse<'_>) {
        let direct = response.to_json().unwrap();
        let serde = serde_json::to_vec(response).unwrap();
        assert_eq!(
            String::from_utf8(direct).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }

    #[test]
    fn a_plain_feed_is_written_as_serde_writes_it() {
        assert_as_serde(&plain());
        assert_as_serde(&FeedResponse {
            items: Vec::new(),
            ..plain()
        });
    }

    #[test]
    fn every_optional_field_is_written_as_serde_writes_it() {
        assert_as_serde(&FeedResponse {
            first_stage: Some(ModelRef {
                name: "first",
                version: "v1",
            }),
            degraded: true,
            degraded_reason: Some("store_unavailable"),
            page: 7,
            next_cursor: Some("eyJzIjoi.abc-_DEF"),
            rules_version: u64::MAX,
            experiment: Some("ranker_test"),
            arm: Some("treatment"),
            ..plain()
        });
    }

    #[test]
    fn strings_that_need_escaping_go_through_serde_json() {
        assert_as_serde(&FeedResponse {
            user_id: "a\"b\\c\nd\u{1}é/€",
            request_id: "tab\there",
            ..plain()
        });
    }

    #[test]
    fn explain_fields_take_the_derived_serialization() {
        let mut response = plain();
        response.items[1].model_score = Some(0.5);
        assert!(response.explains());
        assert_as_serde(&response);
        let mut response = plain();
        response.timings_ms = Some([("total", 1.25)].into());
        assert!(response.explains());
        assert!(!plain().explains());
    }
}
