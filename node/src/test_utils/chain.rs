//! Test helpers of the chain area.
