//! Drift of served traffic against the training reference: per feature and for the score,
//! served values are counted into the reference's bins (fixed memory: one counter per bin),
//! and the population stability index (PSI) compares the two distributions.
//!
//! PSI = Σ (observed − expected) · ln(observed / expected) over bins; the usual reading is
//! < 0.1 stable, 0.1–0.25 watch, > 0.25 act.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Empty bins would make PSI infinite; both sides are floored at this share.
const MIN_SHARE: f64 = 1e-4;
/// Rows of one request that feed the monitor: a strided sample bounds its cost per request.
/// 16 rows is still 16 000 rows/s at 1 000 feeds/s, far more than a PSI over ten bins needs;
/// 64 cost ~4 % of a cheap model's feed (callgrind, loadtest/README.md).
const ROWS_PER_REQUEST: usize = 16;

/// One distribution at training time: interior bin edges and the share of values per bin
/// (`edges.len() + 1` of them). A value v falls in bin #{edges ≤ v}.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub proportions: Vec<f64>,
}

/// `reference` in the model metadata, written by `training/train.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub rows: u64,
    pub features: HashMap<String, Bins>,
    pub score: Bins,
}

impl Bins {
    fn bin(&self, v: f64) -> usize {
        self.edges.partition_point(|e| *e <= v)
    }

    fn is_valid(&self) -> bool {
        self.proportions.len() == self.edges.len() + 1
    }
}

/// PSI of `observed` counts against `expected` shares; `None` without observations.
pub fn psi(expected: &[f64], observed: &[u64]) -> Option<f64> {
    let total: u64 = observed.iter().sum();
    if total == 0 || expected.len() != observed.len() {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(observed)
            .map(|(&e, &o)| {
                let e = e.max(MIN_SHARE);
                let o = (o as f64 / total as f64).max(MIN_SHARE);
                (o - e) * (o / e).ln()
            })
            .sum(),
    )
}

struct Monitored {
    bins: Bins,
    counts: Vec<AtomicU64>,
}

impl Monitored {
    fn new(bins: Bins) -> Self {
        let counts = (0..bins.proportions.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        Self { bins, counts }
    }

    fn add(&self, values: impl Iterator<Item = f32>) {
        // On the stack for the usual few bins: this runs for every feature of every feed,
        // and an allocation each was ~15 a feed.
        let mut stack = [0u64; 32];
        let mut heap = Vec::new();
        let local: &mut [u64] = match stack.get_mut(..self.counts.len()) {
            Some(local) => local,
            None => {
                heap.resize(self.counts.len(), 0);
                &mut heap
            }
        };
        // Non-finite values are the feature-health counters' business, not drift's.
        for v in values.map(f64::from).filter(|v| v.is_finite()) {
            local[self.bin(v)] += 1;
        }
        for (count, &n) in self.counts.iter().zip(local.iter()) {
            if n > 0 {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn bin(&self, v: f64) -> usize {
        self.bins.bin(v)
    }

    /// The counts since the last call, which starts a new window.
    fn take(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect()
    }
}

/// One window's drift: PSI per feature (in column order) and of the score.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftReport {
    pub samples: u64,
    pub features: Vec<(String, f64)>,
    pub score: f64,
}

/// What a model's served traffic looked like since the last report, in the reference's bins.
pub struct DriftMonitor {
    /// Column order of the model's matrix; `None` where the reference has no bins for it.
    features: Vec<(String, Option<Monitored>)>,
    score: Monitored,
}

impl DriftMonitor {
    /// `None` when the metadata has no (usable) reference: drift is then not monitored.
    pub fn new(reference: &Reference, columns: &[String]) -> Option<Self> {
        if !reference.score.is_valid() {
            return None;
        }
        let features = columns
            .iter()
            .map(|name| {
                let bins = reference.features.get(name).filter(|b| b.is_valid());
                (name.clone(), bins.cloned().map(Monitored::new))
            })
            .collect();
        Some(Self {
            features,
            score: Monitored::new(reference.score.clone()),
        })
    }

    /// Counts a strided sample of one request's rows (row-major, one column per feature).
    pub fn observe(&self, matrix: &[f32], scores: &[f32]) {
        let width = self.features.len();
        let rows = scores.len();
        if width == 0 || matrix.len() != rows * width {
            return;
        }
        let stride = rows.div_ceil(ROWS_PER_REQUEST).max(1);
        let sampled = (0..rows).step_by(stride);
        // Counted locally first: one atomic add per touched bin, not per value.
        for (column, (_, monitored)) in self.features.iter().enumerate() {
            if let Some(m) = monitored {
                m.add(sampled.clone().map(|row| matrix[row * width + column]));
            }
        }
        self.score.add(sampled.map(|row| scores[row]));
    }

    /// PSI of the window since the last call, which starts a new one. `None` (and the window
    /// is kept) while fewer than `min_samples` rows were seen: small windows are noise.
    pub fn report(&self, min_samples: u64) -> Option<DriftReport> {
        let pending: u64 = self
            .score
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        if pending < min_samples.max(1) {
            return None;
        }
        let score_counts = self.score.take();
        let features = self
            .features
            .iter()
            .filter_map(|(name, m)| {
                let m = m.as_ref()?;
                Some((name.clone(), psi(&m.bins.proportions, &m.take())?))
            })
            .collect();
        Some(DriftReport {
            samples: score_counts.iter().sum(),
            features,
            score: psi(&self.score.bins.proportions, &score_counts)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deciles() -> Bins {
        Bins {
            edges: (1..10).map(|i| f64::from(i) / 10.0).collect(),
            proportions: vec![0.1; 10],
        }
    }

    fn monitor() -> DriftMonitor {
        let reference = Reference {
            rows: 1000,
            features: HashMap::from([("x".to_string(), deciles())]),
            score: deciles(),
        };
        DriftMonitor::new(&reference, &["x".into(), "unbinned".into()]).unwrap()
    }

    #[test]
    fn values_like_the_reference_have_near_zero_psi() {
        let m = monitor();
        // Uniform on [0, 1), like the reference deciles; one row per request.
        for i in 0..10_000 {
            let v = (i % 1000) as f32 / 1000.0;
            m.observe(&[v, 7.0], &[v]);
        }
        let r = m.report(100).unwrap();
        assert_eq!(r.samples, 10_000);
        assert_eq!(r.features.len(), 1, "unbinned features are skipped");
        assert!(r.features[0].1 < 0.01, "{r:?}");
        assert!(r.score < 0.01, "{r:?}");
        assert!(m.report(1).is_none(), "a report starts a new window");
    }

    #[test]
    fn shifted_values_have_a_large_psi() {
        let m = monitor();
        for i in 0..1000 {
            let v = 0.5 + (i % 500) as f32 / 1000.0;
            m.observe(&[v, 0.0], &[0.95]);
        }
        let r = m.report(100).unwrap();
        assert!(r.features[0].1 > 0.25, "{r:?}");
        assert!(r.score > 1.0, "all in one bin: {r:?}");
    }

    #[test]
    fn small_windows_are_kept_until_they_are_big_enough() {
        let m = monitor();
        m.observe(&[0.5, 0.0], &[0.5]);
        assert!(m.report(2).is_none());
        m.observe(&[0.5, 0.0], &[0.5]);
        assert_eq!(m.report(2).unwrap().samples, 2);
    }

    #[test]
    fn a_large_request_is_sampled() {
        let m = monitor();
        let rows = 500;
        let matrix = vec![0.5; rows * 2];
        m.observe(&matrix, &vec![0.5; rows]);
        let r = m.report(1).unwrap();
        assert!(
            r.samples <= ROWS_PER_REQUEST as u64 && r.samples >= ROWS_PER_REQUEST as u64 / 2,
            "{r:?}"
        );
    }
}
