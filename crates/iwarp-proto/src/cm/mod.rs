//! MPA connection setup.
