//! CLI-only code: the simulator (training data), the traffic driver, the component
//! benchmarks, the in-process fault scenarios. Nothing the server runs imports this layer.

pub mod bench;
pub mod chaos;
pub mod drive;
pub mod learning;
pub mod simulate;
