//! Integration tests of the learn area.
