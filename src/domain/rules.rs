//! A tenant's business rules: the document shops edit (`GET`/`PUT …/rules`, defaults in
//! `[tenants.<id>.rules]`), and its validation. Plain data: `ranking::rules` compiles a valid
//! document into what the rules stage of the feed pipeline applies.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::HISTORY_IMPRESSIONS;
use super::ids::check_id;

/// Most pins, boosts and excluded values a document may hold (each list).
pub const MAX_PINS: usize = 100;
pub const MAX_BOOSTS: usize = 50;
pub const MAX_EXCLUDED: usize = 10_000;
/// Pins place items on the first page, which holds at most this many (the feed's `limit`).
pub const MAX_PIN_POSITION: u32 = 100;
pub const MAX_BOOST_FACTOR: f64 = 10.0;
/// Fatigue looks back at most a week (the history keeps impressions that long at least).
pub const MAX_FATIGUE_HOURS: u32 = 168;

/// The rules document. Every field may be absent: an absent field is its default (nothing
/// excluded, no boost, pin, diversity or fatigue), except the two exclusions, which are on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Items the user bought are not served.
    pub exclude_purchased: bool,
    /// Items whose `seller_id` is the user's id are not served.
    pub exclude_own_items: bool,
    pub exclude: Exclude,
    /// Applied to the model's score in order: a positive score is multiplied by the factor, a
    /// negative one divided by it, so a factor above 1 always moves an item up.
    pub boosts: Vec<Boost>,
    /// Items at fixed positions of the first page while `until` is in the future.
    pub pins: Vec<Pin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diversity: Option<Diversity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fatigue: Option<Fatigue>,
    /// What `new_arrival` in a boost's match means: created less than this many hours ago.
    #[schema(minimum = 1, maximum = 8760)]
    pub new_arrival_hours: u32,
}

impl Rules {
    /// Its entries, as the `rules` budget counts them: excluded categories, brands, sellers
    /// and items, boosts and pins.
    pub fn entries(&self) -> usize {
        let e = &self.exclude;
        e.categories.len()
            + e.brands.len()
            + e.sellers.len()
            + e.items.len()
            + self.boosts.len()
            + self.pins.len()
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            exclude_purchased: true,
            exclude_own_items: true,
            exclude: Exclude::default(),
            boosts: Vec::new(),
            pins: Vec::new(),
            diversity: None,
            fatigue: None,
            new_arrival_hours: 168,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Exclude {
    pub categories: Vec<String>,
    pub brands: Vec<String>,
    pub sellers: Vec<String>,
    pub items: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    /// Every key must match: `category`, `brand`, `seller_id` (strings), `new_arrival`
    /// (a boolean) or `attributes.<key>` (equal to the value).
    #[serde(rename = "match")]
    #[schema(value_type = Object)]
    pub matches: serde_json::Map<String, serde_json::Value>,
    /// In (0, 10].
    pub factor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub item_id: String,
    /// 1-based, on the first page.
    #[schema(minimum = 1, maximum = 100)]
    pub position: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub until: OffsetDateTime,
}

/// In every `window` consecutive positions, at most `max_per_*` items sharing a brand,
/// category or seller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Diversity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_per_brand: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_per_category: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_per_seller: Option<u32>,
    #[schema(minimum = 2, maximum = 100)]
    pub window: u32,
}

/// An item shown `max_impressions` times within `window_hours` without a click, cart or
/// purchase is not served to that user again within the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fatigue {
    #[schema(minimum = 1, maximum = 16)]
    pub max_impressions: u32,
    #[schema(minimum = 1, maximum = 168)]
    pub window_hours: u32,
}

/// A boost's match keys, besides `attributes.<key>`.
pub const MATCH_KEYS: [&str; 4] = ["category", "brand", "seller_id", "new_arrival"];

impl Rules {
    /// Parses and validates a document: every problem, each with the path of its field.
    pub fn parse(json: &[u8]) -> Result<Rules, Vec<(String, String)>> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let rules: Rules = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            vec![(path, e.into_inner().to_string())]
        })?;
        rules.validate()?;
        Ok(rules)
    }

    /// Every problem of a parsed document (field path, reason); none: it is valid.
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut bad = |field: String, reason: &str| problems.push((field, reason.to_owned()));
        for (name, list) in [
            ("categories", &self.exclude.categories),
            ("brands", &self.exclude.brands),
            ("sellers", &self.exclude.sellers),
            ("items", &self.exclude.items),
        ] {
            if list.len() > MAX_EXCLUDED {
                bad(format!("exclude.{name}"), "at most 10000 values");
            }
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() || v.len() > 128 {
                    bad(format!("exclude.{name}[{i}]"), "must be 1-128 characters");
                }
            }
        }
        if self.boosts.len() > MAX_BOOSTS {
            bad("boosts".into(), "at most 50 boosts");
        }
        for (i, b) in self.boosts.iter().enumerate() {
            if !(b.factor > 0.0 && b.factor <= MAX_BOOST_FACTOR) {
                bad(format!("boosts[{i}].factor"), "must be in (0, 10]");
            }
            if b.matches.is_empty() {
                bad(format!("boosts[{i}].match"), "must name at least one key");
            }
            for (key, value) in &b.matches {
                let field = format!("boosts[{i}].match.{key}");
                match key.as_str() {
                    "new_arrival" if !value.is_boolean() => bad(field, "must be true or false"),
                    "category" | "brand" | "seller_id" if !value.is_string() => {
                        bad(field, "must be a string")
                    }
                    "new_arrival" | "category" | "brand" | "seller_id" => {}
                    k if k.strip_prefix("attributes.").is_some_and(|a| !a.is_empty()) => {
                        if value.is_array() || value.is_object() {
                            bad(field, "must be a string, number, boolean or null")
                        }
                    }
                    _ => bad(
                        field,
                        "unknown key: use category, brand, seller_id, new_arrival or attributes.<key>",
                    ),
                }
            }
        }
        if self.pins.len() > MAX_PINS {
            bad("pins".into(), "at most 100 pins");
        }
        let mut positions = std::collections::HashMap::new();
        for (i, p) in self.pins.iter().enumerate() {
            if let Err(e) = check_id("item_id", &p.item_id) {
                problems.push((format!("pins[{i}].item_id"), e));
            }
            if !(1..=MAX_PIN_POSITION).contains(&p.position) {
                problems.push((
                    format!("pins[{i}].position"),
                    "must be between 1 and 100".into(),
                ));
            } else if let Some(first) = positions.insert(p.position, i) {
                problems.push((
                    format!("pins[{i}].position"),
                    format!("position {} is already pinned by pins[{first}]", p.position),
                ));
            }
        }
        if let Some(d) = &self.diversity {
            if !(2..=100).contains(&d.window) {
                problems.push((
                    "diversity.window".into(),
                    "must be between 2 and 100".into(),
                ));
            }
            for (name, v) in [
                ("max_per_brand", d.max_per_brand),
                ("max_per_category", d.max_per_category),
                ("max_per_seller", d.max_per_seller),
            ] {
                if v.is_some_and(|v| !(1..=100).contains(&v)) {
                    problems.push((
                        format!("diversity.{name}"),
                        "must be between 1 and 100".into(),
                    ));
                }
            }
            if d.max_per_brand.is_none()
                && d.max_per_category.is_none()
                && d.max_per_seller.is_none()
            {
                problems.push((
                    "diversity".into(),
                    "name at least one of max_per_brand, max_per_category, max_per_seller".into(),
                ));
            }
        }
        if let Some(f) = &self.fatigue {
            if !(1..=HISTORY_IMPRESSIONS as u32).contains(&f.max_impressions) {
                problems.push((
                    "fatigue.max_impressions".into(),
                    format!("must be between 1 and {HISTORY_IMPRESSIONS}"),
                ));
            }
            if !(1..=MAX_FATIGUE_HOURS).contains(&f.window_hours) {
                problems.push((
                    "fatigue.window_hours".into(),
                    format!("must be between 1 and {MAX_FATIGUE_HOURS}"),
                ));
            }
        }
        if !(1..=8_760).contains(&self.new_arrival_hours) {
            problems.push((
                "new_arrival_hours".into(),
                "must be between 1 and 8760".into(),
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Pins still in force at `now` (Unix seconds).
    pub fn active_pins(&self, now: i64) -> impl Iterator<Item = &Pin> {
        self.pins
            .iter()
            .filter(move |p| p.until.unix_timestamp() > now)
    }
}

/// RFC 3339 of a pin's `until`, as the API shows it.
pub fn format_until(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_and_absent_fields_are_defaults() {
        let doc = br#"{
          "exclude_purchased": true,
          "exclude_own_items": true,
          "exclude": {"categories": [], "brands": [], "sellers": [], "items": []},
          "boosts": [{"match": {"category": "shoes"}, "factor": 1.5}],
          "pins": [{"item_id": "i42", "position": 1, "until": "2026-12-31T00:00:00Z"}],
          "diversity": {"max_per_brand": 2, "max_per_category": 3, "max_per_seller": 2, "window": 10},
          "fatigue": {"max_impressions": 5, "window_hours": 24}
        }"#;
        let rules = Rules::parse(doc).unwrap();
        assert_eq!(rules.boosts[0].factor, 1.5);
        assert_eq!(rules.pins[0].until.unix_timestamp(), 1_798_675_200);
        assert_eq!(Rules::parse(b"{}").unwrap(), Rules::default());
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let doc = br#"{
          "boosts": [{"match": {"colour": "red"}, "factor": 0}],
          "pins": [{"item_id": "a", "position": 1, "until": "2030-01-01T00:00:00Z"},
                   {"item_id": "b", "position": 1, "until": "2030-01-01T00:00:00Z"}],
          "diversity": {"window": 1},
          "fatigue": {"max_impressions": 99, "window_hours": 24}
        }"#;
        let problems = Rules::parse(doc).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "boosts[0].factor",
                "boosts[0].match.colour",
                "pins[1].position",
                "diversity.window",
                "diversity",
                "fatigue.max_impressions"
            ]
        );
        let unknown = Rules::parse(br#"{"exclude": {"colours": []}}"#).unwrap_err();
        assert_eq!(unknown[0].0, "exclude.colours");
        assert!(
            unknown[0].1.contains("unknown field `colours`"),
            "{unknown:?}"
        );
    }
}
