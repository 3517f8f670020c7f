//! CLI-only code: the simulator (training data), the traffic driver, the component
//! benchmarks. Nothing the server runs imports this layer.

pub mod bench;
pub mod drive;
pub mod simulate;
