//! NVMe over Fabrics (RDMA transport binding) over iWARP.
//!
//! - [`bench`](mod@bench): a block I/O benchmark (sequential and random reads and writes at a queue
//!   depth) for any block device, the `iwnvme bench` subcommand's engine.
//! - [`block`]: the block devices a target serves and an initiator exposes (a file, memory).
//! - [`host`]: the initiator: attaches a remote controller and exposes its namespace as a block device.
//! - [`nbd`]: an NBD server that hands a block device (an attached remote namespace) to
//!   standard tools (`qemu-img`, `nbdinfo`, `nbdcopy`, the kernel's NBD client).
//! - [`target`]: an NVMe-oF target serving a block device as one namespace.
//! - [`wire`]: the RDMA transport binding's bytes: CM private data, command and response
//!   capsules, SGL descriptors, Fabrics commands, Identify pages, controller properties.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod block;
pub mod host;
pub mod nbd;
pub mod target;
pub mod wire;
