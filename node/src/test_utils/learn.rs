//! Test helpers of the learn area.
