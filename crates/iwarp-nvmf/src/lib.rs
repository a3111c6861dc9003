//! NVMe over Fabrics (RDMA transport binding) over iWARP.
//!
//! - [`block`]: the block devices a target serves and an initiator exposes (a file, memory).
//! - [`nbd`]: an NBD server that hands a block device (an attached remote namespace) to
//!   standard tools (`qemu-img`, `nbdinfo`, `nbdcopy`, the kernel's NBD client).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod nbd;
