//! Shared pieces of the iWARP command-line tools (`iwping`, `iwperf`, `iwdump`).
#![forbid(unsafe_code)]

pub mod liveness_args;
pub mod mpa_args;
pub mod shared_port;
