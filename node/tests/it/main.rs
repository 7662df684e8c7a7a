//! The one integration-test binary (STYLE.md §13): a module per area.

mod chain;
mod learn;
mod mesh;
