//! The few ONNX protobuf messages the native engines read: the graph's nodes and their
//! attributes. Field numbers are `onnx.proto`'s; every other field is skipped by the decoder.
//! (A generated `onnx` crate would bring the whole schema and a build step for five messages.)

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// Set when the attribute is a tensor (`nodes_values_as_tensor`, double thresholds).
    #[prost(bytes = "vec", optional, tag = "5")]
    pub t: Option<Vec<u8>>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

impl NodeProto {
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name == name)
    }
}

pub fn decode(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

/// Why a graph is not evaluated natively (it is then served by ONNX Runtime).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

pub fn unsupported<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

/// The one operator node of a graph that is that node reading the model's `input`, followed by
/// nothing but `Identity` nodes up to its `output`: the only shape a native engine evaluates
/// (what LightGBM's and scikit-learn's converters write), so it cannot miss a step.
pub fn single_operator(
    bytes: &[u8],
    op_type: &str,
    input: &str,
    output: &str,
) -> Result<NodeProto, Unsupported> {
    let model = decode(bytes).map_err(|e| Unsupported(e.to_string()))?;
    let graph = model.graph.unwrap_or_default();
    let mut nodes = graph.node.into_iter();
    let Some(first) = nodes.next() else {
        return unsupported("the graph has no nodes");
    };
    if first.op_type != op_type || first.domain != "ai.onnx.ml" {
        return unsupported(format!("the graph starts with {}", first.op_type));
    }
    if first.input != [input] {
        return unsupported(format!("the {op_type} does not read the model's input"));
    }
    let mut value = first.output.first().cloned().unwrap_or_default();
    for node in nodes {
        if node.op_type != "Identity" || node.input != [value.as_str()] {
            return unsupported(format!("{} after the {op_type}", node.op_type));
        }
        value = node.output.first().cloned().unwrap_or_default();
    }
    if value != output {
        return unsupported(format!("the {op_type}'s output is not the model's output"));
    }
    Ok(first)
}

/// A model of one `ai.onnx.ml` operator reading `input` and an `Identity` to `variable`: the
/// shape the native engines read, for their tests.
#[cfg(test)]
pub fn one_operator_model(op_type: &str, attribute: Vec<AttributeProto>) -> Vec<u8> {
    let node = NodeProto {
        input: vec!["input".into()],
        output: vec!["out".into()],
        op_type: op_type.into(),
        domain: "ai.onnx.ml".into(),
        attribute,
    };
    let identity = NodeProto {
        input: vec!["out".into()],
        output: vec!["variable".into()],
        op_type: "Identity".into(),
        ..Default::default()
    };
    ModelProto {
        graph: Some(GraphProto {
            node: vec![node, identity],
            ..Default::default()
        }),
    }
    .encode_to_vec()
}
