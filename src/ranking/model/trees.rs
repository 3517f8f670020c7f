//! Tree ensembles evaluated natively: an ONNX `TreeEnsembleRegressor` (what LightGBM exports)
//! read from the model file itself and flattened into one node array, scored a tree at a time
//! over every row of the batch, so a tree's nodes stay in cache while all rows pass through it.
//!
//! ONNX Runtime's generic tree interpreter spent 5.2 M of a feed's 6.15 M instructions on the
//! committed 100-tree model. This evaluator does what that kernel does for this model —
//! `x <= threshold` in f32, leaf values summed in f32 in tree order, the base value added last
//! — so its scores are ONNX Runtime's to the bit on finite rows (a test and the load check
//! compare them). There is no separate compiled artifact: the `.onnx` file is the model,
//! ONNX Runtime stays the engine for every other graph, and the loader falls back to it for
//! anything this module does not reproduce (other branch modes, post transforms, targets).

use super::onnx_graph::{self, NodeProto, Unsupported, unsupported};

/// A split, 16 bytes. Its children are `[yes, no]`: `yes` is taken when
/// `x[feature] <= threshold`; a child `c >= 0` is the split at byte offset `c` of the node
/// array (an offset, not an index: one shift less per level), `c < 0` is leaf `!c`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    threshold: f32,
    feature: u16,
    /// A missing (NaN) value goes to `yes` (`nodes_missing_value_tracks_true`); `<=` alone
    /// sends it to `no`.
    missing_yes: bool,
    children: [i32; 2],
}

#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    /// Each tree's root, in the ensemble's order (the order scores are summed in).
    roots: Vec<i32>,
    leaves: Vec<f32>,
    base: f32,
    columns: usize,
}

impl TreeEnsemble {
    /// The ensemble in an ONNX model whose graph is one `TreeEnsembleRegressor` reading
    /// `input` (`columns` wide), followed by nothing but `Identity` nodes up to `output`.
    pub fn from_onnx(
        bytes: &[u8],
        input: &str,
        output: &str,
        columns: usize,
    ) -> Result<Self, Unsupported> {
        let node = onnx_graph::single_operator(bytes, "TreeEnsembleRegressor", input, output)?;
        Self::from_node(&node, columns)
    }

    fn from_node(node: &NodeProto, columns: usize) -> Result<Self, Unsupported> {
        if columns == 0 {
            return unsupported("a model without inputs");
        }
        let ints = |name: &str| node.attr(name).map(|a| a.ints.as_slice()).unwrap_or(&[]);
        let floats = |name: &str| node.attr(name).map(|a| a.floats.as_slice()).unwrap_or(&[]);
        let text = |name: &str| node.attr(name).map(|a| a.s.as_slice());

        if node.attr("n_targets").map_or(1, |a| a.i) != 1 {
            return unsupported("more than one target");
        }
        if !matches!(text("post_transform"), None | Some(b"NONE")) {
            return unsupported("a post transform");
        }
        if !matches!(text("aggregate_function"), None | Some(b"SUM")) {
            return unsupported("an aggregate other than SUM");
        }
        if node.attr("nodes_values_as_tensor").is_some()
            || node.attr("target_weights_as_tensor").is_some()
        {
            return unsupported("double-precision thresholds or weights");
        }
        let base = match floats("base_values") {
            [] => 0.0,
            [b] => *b,
            _ => return unsupported("several base values"),
        };

        let (tree_ids, node_ids) = (ints("nodes_treeids"), ints("nodes_nodeids"));
        let (features, values) = (ints("nodes_featureids"), floats("nodes_values"));
        let (yes, no) = (ints("nodes_truenodeids"), ints("nodes_falsenodeids"));
        let missing = ints("nodes_missing_value_tracks_true");
        let modes = node
            .attr("nodes_modes")
            .map(|a| a.strings.as_slice())
            .unwrap_or(&[]);
        let n = tree_ids.len();
        if n > i32::MAX as usize / std::mem::size_of::<Node>() {
            return unsupported("more nodes than byte offsets in an i32");
        }
        if [
            node_ids.len(),
            features.len(),
            values.len(),
            yes.len(),
            no.len(),
            modes.len(),
        ]
        .iter()
        .any(|&l| l != n)
            || !(missing.is_empty() || missing.len() == n)
        {
            return unsupported("node attributes of different lengths");
        }

        // (tree, node id) → position in the attribute arrays.
        let mut position = std::collections::HashMap::with_capacity(n);
        for i in 0..n {
            position.insert((tree_ids[i], node_ids[i]), i);
        }
        // Leaf weights by position (a leaf may carry several weights for one target: summed).
        let mut weight = vec![None::<f32>; n];
        let (t_trees, t_nodes) = (ints("target_treeids"), ints("target_nodeids"));
        let (t_ids, t_weights) = (ints("target_ids"), floats("target_weights"));
        if t_trees.len() != t_nodes.len() || t_trees.len() != t_weights.len() {
            return unsupported("target attributes of different lengths");
        }
        for j in 0..t_trees.len() {
            if t_ids.get(j).copied().unwrap_or(0) != 0 {
                return unsupported("a target other than 0");
            }
            let Some(&p) = position.get(&(t_trees[j], t_nodes[j])) else {
                return unsupported("a weight on a node that does not exist");
            };
            *weight[p].get_or_insert(0.0) += t_weights[j];
        }

        // Trees in order of first appearance; each tree's root is its node 0 (LightGBM's and
        // the converters' numbering), its nodes flattened depth first.
        let mut trees: Vec<i64> = Vec::new();
        for &t in tree_ids {
            if trees.last() != Some(&t) && !trees.contains(&t) {
                trees.push(t);
            }
        }
        let mut ensemble = Self {
            nodes: Vec::with_capacity(n),
            roots: Vec::with_capacity(trees.len()),
            leaves: Vec::new(),
            base,
            columns,
        };
        let attrs = Attrs {
            features,
            values,
            yes,
            no,
            missing,
            modes,
            weight: &weight,
            position: &position,
        };
        for tree in trees {
            let root = ensemble.flatten(&attrs, tree, 0, 0)?;
            ensemble.roots.push(root);
        }
        Ok(ensemble)
    }

    /// Appends the subtree at `node_id` and returns its reference (a node index, or `!leaf`).
    fn flatten(
        &mut self,
        a: &Attrs<'_>,
        tree: i64,
        node_id: i64,
        depth: usize,
    ) -> Result<i32, Unsupported> {
        // Deeper than any real tree: a cycle in a malformed file.
        if depth > 256 {
            return unsupported("a tree deeper than 256 (a cycle?)");
        }
        let Some(&p) = a.position.get(&(tree, node_id)) else {
            return unsupported(format!("tree {tree} has no node {node_id}"));
        };
        match a.modes[p].as_slice() {
            b"LEAF" => {
                let Some(w) = a.weight[p] else {
                    return unsupported("a leaf without a weight");
                };
                self.leaves.push(w);
                Ok(!(self.leaves.len() as i32 - 1))
            }
            b"BRANCH_LEQ" => {
                let feature = a.features[p];
                // The evaluator indexes rows without bounds checks: this is what makes it sound.
                if feature < 0 || feature as usize >= self.columns || feature > u16::MAX as i64 {
                    return unsupported(format!("a split on column {feature}"));
                }
                let index = self.nodes.len();
                self.nodes.push(Node {
                    threshold: a.values[p],
                    feature: feature as u16,
                    missing_yes: a.missing.get(p).is_some_and(|&m| m != 0),
                    children: [0, 0],
                });
                let yes = self.flatten(a, tree, a.yes[p], depth + 1)?;
                let no = self.flatten(a, tree, a.no[p], depth + 1)?;
                self.nodes[index].children = [yes, no];
                Ok(Self::offset(index))
            }
            other => unsupported(format!(
                "branch mode {}",
                String::from_utf8_lossy(other).into_owned()
            )),
        }
    }

    /// The reference to split `index`: its byte offset.
    fn offset(index: usize) -> i32 {
        (index * std::mem::size_of::<Node>()) as i32
    }

    pub fn trees(&self) -> usize {
        self.roots.len()
    }

    /// Every split as (column, threshold).
    pub fn splits(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.nodes.iter().map(|n| (n.feature as usize, n.threshold))
    }

    /// One score per row of a row-major `rows × columns` matrix.
    pub fn score(&self, matrix: &[f32], rows: usize) -> Vec<f32> {
        let cols = self.columns;
        assert_eq!(matrix.len(), rows * cols, "a {rows} x {cols} matrix");
        let mut scores = vec![0.0f32; rows];
        // A NaN takes its node's `missing_yes` branch, which `<=` alone cannot express: a
        // batch with one (none, with the service's features) goes the careful way.
        let any_missing = matrix.iter().any(|v| v.is_nan());
        for &root in &self.roots {
            if any_missing {
                self.pass(root, matrix, &mut scores, |x, node| {
                    x <= node.threshold || (x.is_nan() && node.missing_yes)
                });
            } else {
                self.pass(root, matrix, &mut scores, |x, node| x <= node.threshold);
            }
        }
        for score in &mut scores {
            *score += self.base;
        }
        scores
    }

    /// Every row through one tree: adds its leaf value to the row's score. `yes(x, node)`:
    /// whether `x` goes to the node's first child.
    #[inline(always)]
    fn pass(
        &self,
        root: i32,
        matrix: &[f32],
        scores: &mut [f32],
        yes: impl Fn(f32, &Node) -> bool,
    ) {
        let cols = self.columns;
        let base = self.nodes.as_ptr().cast::<u8>();
        for (row, score) in matrix.chunks_exact(cols).zip(scores.iter_mut()) {
            let mut at = root;
            while at >= 0 {
                // SAFETY: `flatten` made every reference `>= 0` the byte offset of a node it
                // pushed (and never removes one), and checked `feature < columns == row.len()`.
                let node = unsafe { &*base.add(at as usize).cast::<Node>() };
                let x = unsafe { *row.get_unchecked(node.feature as usize) };
                at = node.children[usize::from(!yes(x, node))];
            }
            // SAFETY: a negative reference is `!leaf` of a leaf `flatten` pushed.
            *score += unsafe { *self.leaves.get_unchecked(!at as usize) };
        }
    }
}

/// The node attributes [`TreeEnsemble::flatten`] reads.
struct Attrs<'a> {
    features: &'a [i64],
    values: &'a [f32],
    yes: &'a [i64],
    no: &'a [i64],
    missing: &'a [i64],
    modes: &'a [Vec<u8>],
    weight: &'a [Option<f32>],
    position: &'a std::collections::HashMap<(i64, i64), usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::model::onnx_graph::AttributeProto;

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            ..Default::default()
        }
    }
    fn floats(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            floats: v.to_vec(),
            ..Default::default()
        }
    }

    /// Two trees over two columns: tree 0 splits x0 <= 0.5 (NaN goes yes) into leaves 1 / 2;
    /// tree 1 is a single leaf. Base value 0.25.
    fn model(mode: &str) -> Vec<u8> {
        let modes = AttributeProto {
            name: "nodes_modes".into(),
            strings: vec![
                mode.into(),
                b"LEAF".to_vec(),
                b"LEAF".to_vec(),
                b"LEAF".to_vec(),
            ],
            ..Default::default()
        };
        onnx_graph::one_operator_model(
            "TreeEnsembleRegressor",
            vec![
                ints("nodes_treeids", &[0, 0, 0, 1]),
                ints("nodes_nodeids", &[0, 1, 2, 0]),
                ints("nodes_featureids", &[0, 0, 0, 0]),
                floats("nodes_values", &[0.5, 0.0, 0.0, 0.0]),
                ints("nodes_truenodeids", &[1, 0, 0, 0]),
                ints("nodes_falsenodeids", &[2, 0, 0, 0]),
                ints("nodes_missing_value_tracks_true", &[1, 0, 0, 0]),
                modes,
                ints("target_treeids", &[0, 0, 1]),
                ints("target_nodeids", &[1, 2, 0]),
                ints("target_ids", &[0, 0, 0]),
                floats("target_weights", &[1.0, 2.0, 10.0]),
                floats("base_values", &[0.25]),
            ],
        )
    }

    #[test]
    fn scores_each_row_through_every_tree() {
        let trees = TreeEnsemble::from_onnx(&model("BRANCH_LEQ"), "input", "variable", 2).unwrap();
        assert_eq!(trees.trees(), 2);
        // x0 = 0.5 is <= the threshold: yes. 0.75: no.
        let scores = trees.score(&[0.5, 9.0, 0.75, 9.0], 2);
        assert_eq!(scores, [11.25, 12.25]);
        // A NaN follows missing_value_tracks_true.
        assert_eq!(trees.score(&[f32::NAN, 0.0, 1.0, 0.0], 2), [11.25, 12.25]);
        assert!(trees.score(&[], 0).is_empty());
    }

    #[test]
    fn refuses_what_it_would_not_reproduce() {
        let lt = TreeEnsemble::from_onnx(&model("BRANCH_LT"), "input", "variable", 2);
        assert!(lt.unwrap_err().0.contains("BRANCH_LT"));
        let wrong_output = TreeEnsemble::from_onnx(&model("BRANCH_LEQ"), "input", "scores", 2);
        assert!(wrong_output.is_err());
        let narrow = TreeEnsemble::from_onnx(&model("BRANCH_LEQ"), "input", "variable", 0);
        assert!(narrow.unwrap_err().0.contains("without inputs"));
        let one = TreeEnsemble::from_onnx(&model("BRANCH_LEQ"), "input", "variable", 1);
        assert!(one.is_ok(), "column 0 of 1");
        assert!(TreeEnsemble::from_onnx(b"not a model", "input", "variable", 2).is_err());
    }
}
