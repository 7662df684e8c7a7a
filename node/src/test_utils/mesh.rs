//! Test helpers of the mesh area.
