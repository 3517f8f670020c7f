//! Linear models evaluated natively: an ONNX `LinearRegressor` (what `training/train.py`
//! exports for the linear ranker and the cascade's first stage) read from the model file
//! itself, a row's score being its dot product with the coefficients plus the intercept.
//!
//! ONNX Runtime ran this one operator through a session call, its kernel and a generic GEMM:
//! ~47 k instructions for a 500-row feed, where the arithmetic is 7 000 multiply-adds. The
//! sums here are in f32 like ONNX Runtime's, in a different order (four lanes), so scores
//! agree to a few units in the last place, not to the bit: every load checks them against
//! ONNX Runtime's on the probe rows (`scorer::AGREEMENT`), as for the tree engine, and a test
//! on real feeds' rows. Anything else — another post transform, several targets — stays with
//! ONNX Runtime.

use super::onnx_graph::{self, NodeProto, Unsupported, unsupported};

#[derive(Debug, Clone)]
pub struct LinearModel {
    coefficients: Vec<f32>,
    intercept: f32,
}

/// Lanes of a dot product: four sums the compiler keeps in one vector register. Lane `k`
/// sums the products of the columns `j` with `j % LANES == k`, in column order.
const LANES: usize = 4;

/// Σ x·w over the lanes, then the lanes' total in a fixed order. Inlined into
/// [`LinearModel::score_fixed`], where the slices' length is a constant and the loop unrolls.
#[inline(always)]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for j in 0..w.len() {
        lanes[j % LANES] += x[j] * w[j];
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

impl LinearModel {
    /// The model in an ONNX graph that is one `LinearRegressor` reading `input` (`columns`
    /// wide), followed by nothing but `Identity` nodes up to `output`.
    pub fn from_onnx(
        bytes: &[u8],
        input: &str,
        output: &str,
        columns: usize,
    ) -> Result<Self, Unsupported> {
        let node = onnx_graph::single_operator(bytes, "LinearRegressor", input, output)?;
        Self::from_node(&node, columns)
    }

    fn from_node(node: &NodeProto, columns: usize) -> Result<Self, Unsupported> {
        if columns == 0 {
            return unsupported("a model without inputs");
        }
        if node.attr("targets").map_or(1, |a| a.i) != 1 {
            return unsupported("more than one target");
        }
        if !matches!(
            node.attr("post_transform").map(|a| a.s.as_slice()),
            None | Some(b"NONE")
        ) {
            return unsupported("a post transform");
        }
        let coefficients = node
            .attr("coefficients")
            .map(|a| a.floats.clone())
            .unwrap_or_default();
        if coefficients.len() != columns {
            return unsupported(format!(
                "{} coefficients for {columns} columns",
                coefficients.len()
            ));
        }
        let intercept = match node.attr("intercepts").map(|a| a.floats.as_slice()) {
            None | Some([]) => 0.0,
            Some([b]) => *b,
            Some(_) => return unsupported("several intercepts"),
        };
        Ok(Self {
            coefficients,
            intercept,
        })
    }

    /// Scores `rows` rows of a row-major matrix with one column per coefficient.
    pub fn score(&self, matrix: &[f32], rows: usize) -> Vec<f32> {
        let cols = self.coefficients.len();
        assert_eq!(matrix.len(), rows * cols, "a {rows} x {cols} matrix");
        // A width known at compile time lets the compiler keep the coefficients in registers
        // and unroll a row into a few vector multiply-adds: ~20 instructions a row, against
        // ~70 for the loop over a width known at run time (and ~85 through ONNX Runtime).
        macro_rules! widths {
            ($($n:literal)*) => {
                match cols {
                    $($n => self.score_fixed::<$n>(matrix),)*
                    _ => self.score_any(matrix),
                }
            };
        }
        widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24)
    }

    fn score_fixed<const N: usize>(&self, matrix: &[f32]) -> Vec<f32> {
        let w: &[f32; N] = self.coefficients.as_slice().try_into().expect("N columns");
        let (rows, _) = matrix.as_chunks::<N>();
        rows.iter().map(|x| dot(x, w) + self.intercept).collect()
    }

    /// As [`Self::score_fixed`] (the same [`dot`]), for any width.
    fn score_any(&self, matrix: &[f32]) -> Vec<f32> {
        let w = &self.coefficients;
        matrix
            .chunks_exact(w.len())
            .map(|x| dot(x, w) + self.intercept)
            .collect()
    }

    /// The coefficients, in column order.
    pub fn coefficients(&self) -> &[f32] {
        &self.coefficients
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::model::onnx_graph::AttributeProto;

    fn attribute(name: &str, floats: &[f32], s: &[u8], i: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            floats: floats.to_vec(),
            s: s.to_vec(),
            i,
            ..Default::default()
        }
    }

    /// A `LinearRegressor` with these coefficients, intercept 0.5, then an `Identity`.
    fn model(coefficients: &[f32], extra: Vec<AttributeProto>) -> Vec<u8> {
        let mut attribute_list = vec![
            attribute("coefficients", coefficients, b"", 0),
            attribute("intercepts", &[0.5], b"", 0),
        ];
        attribute_list.extend(extra);
        onnx_graph::one_operator_model("LinearRegressor", attribute_list)
    }

    #[test]
    fn scores_are_the_dot_product_plus_the_intercept() {
        // Six columns: one full lane chunk and a remainder of two.
        let w = [1.0, -2.0, 0.5, 4.0, 0.25, -1.0];
        let linear = LinearModel::from_onnx(&model(&w, vec![]), "input", "variable", 6).unwrap();
        assert_eq!(linear.coefficients(), w);
        let rows = [
            [1.0, 1.0, 2.0, 0.5, 4.0, 1.0],
            [0.0; 6],
            [3.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let matrix = rows.concat();
        let want: Vec<f32> = rows
            .iter()
            .map(|r| r.iter().zip(&w).map(|(x, w)| x * w).sum::<f32>() + 0.5)
            .collect();
        assert_eq!(linear.score(&matrix, 3), want);
        assert_eq!(want, [2.5, 0.5, 3.5]);
        assert!(linear.score(&[], 0).is_empty());
        // A NaN feature makes a NaN score (the ranker ranks it last and counts it).
        assert!(linear.score(&[f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0], 1)[0].is_nan());
    }

    /// The widths compiled in and the loop for any other width sum alike, to the bit.
    #[test]
    fn every_width_sums_in_the_same_order() {
        for cols in 1..=30 {
            let w: Vec<f32> = (0..cols).map(|j| 1.0 / (j as f32 + 1.3)).collect();
            let linear =
                LinearModel::from_onnx(&model(&w, vec![]), "input", "variable", cols).unwrap();
            let matrix: Vec<f32> = (0..cols * 7)
                .map(|v| (v as f32 * 0.37).sin() * 50.0)
                .collect();
            assert_eq!(
                linear.score(&matrix, 7),
                linear.score_any(&matrix),
                "{cols} columns"
            );
            assert_eq!(linear.score(&matrix, 7).len(), 7);
        }
    }

    #[test]
    fn refuses_what_it_would_not_reproduce() {
        let w = [1.0, 2.0];
        let transform = vec![attribute("post_transform", &[], b"PROBIT", 0)];
        let err = |bytes: &[u8], columns| {
            LinearModel::from_onnx(bytes, "input", "variable", columns)
                .unwrap_err()
                .0
        };
        assert!(err(&model(&w, transform), 2).contains("post transform"));
        let targets = vec![attribute("targets", &[], b"", 2)];
        assert!(err(&model(&[1.0, 2.0, 3.0, 4.0], targets), 2).contains("target"));
        assert!(err(&model(&w, vec![]), 3).contains("2 coefficients for 3 columns"));
        assert!(err(&model(&w, vec![]), 0).contains("without inputs"));
        assert!(!err(b"not a model", 2).is_empty());
        let wrong_output = LinearModel::from_onnx(&model(&w, vec![]), "input", "scores", 2);
        assert!(wrong_output.unwrap_err().0.contains("output"));
        // `post_transform = NONE` spelled out is what the exporter writes: accepted.
        let none = vec![attribute("post_transform", &[], b"NONE", 0)];
        assert!(LinearModel::from_onnx(&model(&w, none), "input", "variable", 2).is_ok());
    }
}
