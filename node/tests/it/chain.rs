//! Integration tests of the chain area.
