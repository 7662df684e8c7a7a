//! The one integration-test binary (STYLE.md §13): a module per area.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the test failing

mod chain;
mod cluster;
mod federated;
mod inference;
mod learn;
mod mesh;
mod rental;
