//! An experiment's figures per arm, with 95 % intervals and the difference to the control (the
//! first arm) tested: what `eaglerank experiment report` prints.
//!
//! CTR@10 is a proportion of shown slots (clicks at positions 1–10 / 10 × feeds): Wilson
//! interval, pooled two-proportion z-test — which treats slots as independent trials (a user's
//! clicks in one feed are not, so the test is somewhat optimistic; the guardrail alert asks
//! for z ≥ 3 for that reason). Add-to-cart and purchase rates per feed are counts over feeds:
//! Poisson intervals and a z-test of two rates. MRR is reported without an interval (it would
//! need each feed's reciprocal rank, which the counters do not keep).

use serde::{Deserialize, Serialize};

/// One arm's counters, as the service exports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmCounts {
    pub arm: String,
    pub model: String,
    pub share: f64,
    pub feeds: u64,
    pub clicks_at_10: u64,
    pub clicks: u64,
    pub add_to_cart: u64,
    pub purchases: u64,
    pub reciprocal_rank: f64,
}

/// A running experiment and its arms' counters in one process (`GET /v1/admin/experiments`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExperimentCounts {
    pub tenant: String,
    pub experiment: String,
    #[schema(value_type = Vec<Object>)]
    pub arms: Vec<ArmCounts>,
}

/// An estimate and its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A difference to the control and its two-sided test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    /// This arm's value minus the control's.
    pub delta: f64,
    /// `delta` over the control's value (0 when the control's is 0).
    pub relative: f64,
    pub z: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmReport {
    pub arm: String,
    pub model: String,
    pub share: f64,
    pub feeds: u64,
    pub ctr_at_10: Estimate,
    pub add_to_cart_per_feed: Estimate,
    pub purchases_per_feed: Estimate,
    pub mrr: f64,
    /// Against the control; `None` for the control itself.
    pub ctr_at_10_vs_control: Option<Difference>,
    pub add_to_cart_vs_control: Option<Difference>,
    pub purchases_vs_control: Option<Difference>,
}

const Z95: f64 = 1.959_963_984_540_054;

/// The standard normal distribution function.
fn phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

fn two_sided(z: f64) -> f64 {
    if z.is_finite() {
        2.0 * (1.0 - phi(z.abs()))
    } else {
        1.0
    }
}

/// Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64) -> Estimate {
    if n == 0 {
        return Estimate {
            value: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    Estimate {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// A rate of `count` events over `n` exposures, normal approximation of the Poisson interval.
pub fn rate(count: u64, n: u64) -> Estimate {
    if n == 0 {
        return Estimate {
            value: 0.0,
            low: 0.0,
            high: 0.0,
        };
    }
    let (c, n) = (count as f64, n as f64);
    let half = Z95 * c.sqrt() / n;
    Estimate {
        value: c / n,
        low: (c / n - half).max(0.0),
        high: c / n + half,
    }
}

/// Pooled two-proportion z-test: arm `(k1, n1)` against control `(k0, n0)`.
pub fn two_proportions(k1: u64, n1: u64, k0: u64, n0: u64) -> Difference {
    let (p1, p0) = (k1 as f64 / n1.max(1) as f64, k0 as f64 / n0.max(1) as f64);
    let pooled = (k1 + k0) as f64 / (n1 + n0).max(1) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1.max(1) as f64 + 1.0 / n0.max(1) as f64)).sqrt();
    let z = if se > 0.0 { (p1 - p0) / se } else { 0.0 };
    Difference {
        delta: p1 - p0,
        relative: if p0 > 0.0 { (p1 - p0) / p0 } else { 0.0 },
        z,
        p_value: two_sided(z),
    }
}

/// Two Poisson rates per exposure: arm `(c1, n1)` against control `(c0, n0)`.
pub fn two_rates(c1: u64, n1: u64, c0: u64, n0: u64) -> Difference {
    let (n1f, n0f) = (n1.max(1) as f64, n0.max(1) as f64);
    let (r1, r0) = (c1 as f64 / n1f, c0 as f64 / n0f);
    let se = (c1 as f64 / (n1f * n1f) + c0 as f64 / (n0f * n0f)).sqrt();
    let z = if se > 0.0 { (r1 - r0) / se } else { 0.0 };
    Difference {
        delta: r1 - r0,
        relative: if r0 > 0.0 { (r1 - r0) / r0 } else { 0.0 },
        z,
        p_value: two_sided(z),
    }
}

/// Every arm's report, the first arm as the control.
pub fn report(arms: &[ArmCounts]) -> Vec<ArmReport> {
    let Some(control) = arms.first() else {
        return Vec::new();
    };
    arms.iter()
        .enumerate()
        .map(|(i, a)| {
            let vs = |f: &dyn Fn() -> Difference| (i > 0).then(f);
            ArmReport {
                arm: a.arm.clone(),
                model: a.model.clone(),
                share: a.share,
                feeds: a.feeds,
                ctr_at_10: wilson(a.clicks_at_10, 10 * a.feeds),
                add_to_cart_per_feed: rate(a.add_to_cart, a.feeds),
                purchases_per_feed: rate(a.purchases, a.feeds),
                mrr: if a.feeds > 0 {
                    a.reciprocal_rank / a.feeds as f64
                } else {
                    0.0
                },
                ctr_at_10_vs_control: vs(&|| {
                    two_proportions(
                        a.clicks_at_10,
                        10 * a.feeds,
                        control.clicks_at_10,
                        10 * control.feeds,
                    )
                }),
                add_to_cart_vs_control: vs(&|| {
                    two_rates(a.add_to_cart, a.feeds, control.add_to_cart, control.feeds)
                }),
                purchases_vs_control: vs(&|| {
                    two_rates(a.purchases, a.feeds, control.purchases, control.feeds)
                }),
            }
        })
        .collect()
}

/// The report as a table for a terminal.
pub fn render(tenant: &str, experiment: &str, reports: &[ArmReport]) -> String {
    use std::fmt::Write as _;
    let pct = |e: &Estimate| {
        format!(
            "{:.2} % [{:.2}, {:.2}]",
            e.value * 100.0,
            e.low * 100.0,
            e.high * 100.0
        )
    };
    let per = |e: &Estimate| format!("{:.4} [{:.4}, {:.4}]", e.value, e.low, e.high);
    let diff = |d: &Option<Difference>| match d {
        None => "(control)".to_owned(),
        Some(d) => format!(
            "{:+.1} % (z {:+.2}, p {:.4}){}",
            d.relative * 100.0,
            d.z,
            d.p_value,
            if d.p_value < 0.05 { " *" } else { "" }
        ),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "experiment {experiment:?} of tenant {tenant:?} (95 % intervals; * p < 0.05 against the control)"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "\narm {:?} (model {:?}, share {}): {} feeds",
            r.arm, r.model, r.share, r.feeds
        );
        let _ = writeln!(
            out,
            "  CTR@10            {:<34} {}",
            pct(&r.ctr_at_10),
            diff(&r.ctr_at_10_vs_control)
        );
        let _ = writeln!(
            out,
            "  add-to-cart/feed  {:<34} {}",
            per(&r.add_to_cart_per_feed),
            diff(&r.add_to_cart_vs_control)
        );
        let _ = writeln!(
            out,
            "  purchases/feed    {:<34} {}",
            per(&r.purchases_per_feed),
            diff(&r.purchases_vs_control)
        );
        let _ = writeln!(out, "  MRR               {:.4}", r.mrr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wilson_interval_matches_a_textbook_value() {
        // 20 of 100: Wilson 95 % interval [0.1333, 0.2888] (Newcombe 1998, method 3).
        let e = wilson(20, 100);
        assert!(
            (e.low - 0.1333).abs() < 5e-4 && (e.high - 0.2888).abs() < 5e-4,
            "{e:?}"
        );
    }

    #[test]
    fn the_two_proportion_test_matches_a_textbook_value() {
        // 60/400 against 40/400: pooled p 0.125, se 0.023385, z = 2.138, p = 0.0325.
        let d = two_proportions(60, 400, 40, 400);
        assert!((d.z - 2.138).abs() < 1e-3, "{d:?}");
        assert!((d.p_value - 0.0325).abs() < 5e-4, "{d:?}");
        assert!((d.relative - 0.5).abs() < 1e-9);
        // Equal arms: no difference.
        let same = two_proportions(50, 1000, 50, 1000);
        assert_eq!(same.z, 0.0);
        assert!((same.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_control_has_no_difference_and_the_others_do() {
        let arm = |name: &str, feeds, clicks| ArmCounts {
            arm: name.into(),
            feeds,
            clicks_at_10: clicks,
            ..Default::default()
        };
        let r = report(&[arm("control", 1000, 500), arm("live", 1000, 700)]);
        assert!(r[0].ctr_at_10_vs_control.is_none());
        let d = r[1].ctr_at_10_vs_control.unwrap();
        assert!(d.delta > 0.0 && d.p_value < 0.001, "{d:?}");
        assert!((r[1].ctr_at_10.value - 0.07).abs() < 1e-12);
        assert!(render("demo-a", "exp", &r).contains("arm \"live\""));
    }
}
