//! Helpers for integration tests and benchmarks: local devnets, in-process nodes, the committed
//! MNIST subset. Compiled only for tests or with the `test-utils` feature.

pub mod chain;
pub mod learn;
pub mod mesh;
pub mod roles;
