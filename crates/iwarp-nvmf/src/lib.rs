//! NVMe over Fabrics (RDMA transport binding) over iWARP.
//!
//! - [`block`]: the block devices a target serves and an initiator exposes (a file, memory).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
