//! NVMe over Fabrics (RDMA transport binding) over iWARP.
//!
//! - [`block`]: the block devices a target serves and an initiator exposes (a file, memory).
//! - [`host`]: the initiator: attaches a remote controller and exposes its namespace as a block device.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod host;
