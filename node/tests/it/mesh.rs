//! Integration tests of the mesh area.
