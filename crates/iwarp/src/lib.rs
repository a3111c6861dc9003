//! # iwarp
//!
//! iWARP RDMA (RFC 5040, 5041, 5044, 6581, 7306) in user space over the host's own TCP
//! sockets: one-sided RDMA Write and Read, Send/Receive, RFC 7306 atomics and Immediate Data,
//! completion queues and an rdma_cm-style connection manager, on any Linux machine, with no
//! RDMA hardware and no kernel module, wire-compatible with Linux siw and iWARP NICs.
//!
//! - Transmit is zero-copy: an FPDU's header, its payload straight from registered memory and
//!   its pad/CRC trailer leave in one gathering `sendmsg` (with `MSG_NOSIGNAL`: the crate
//!   changes no process-wide state such as the `SIGPIPE` disposition).
//! - Receive places directly: a Write's or Read Response's payload is read from the socket
//!   into the target region once the STag, protection domain, rights and bounds have been
//!   checked; a Send's payload into the posted receive buffer.
//! - A few event-loop threads drive every connection; [`Progress::Poll`] lets the application
//!   drive its own queue pairs for the lowest latency, and [`Progress::Assisted`] has both:
//!   the event loop, and any thread that polls an empty completion queue of the queue pair.
//! - Listeners and connections are host TCP sockets, so iWARP and plain TCP share one port
//!   space.
//!
//!
//! A first connection:
//!
//! ```
//! use iwarp::{Access, ConnParams, Device, DeviceConfig, QpInit, SendWr, WcStatus, WorkCompletion};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::open(DeviceConfig::default())?;
//! let pd = dev.alloc_pd();
//!
//! // The passive side: a region peers may write into, and a listener on a port the host picks.
//! let target = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
//! let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
//! let addr = listener.local_addr();
//! let server_cq = dev.create_cq(16)?;
//! let server_qp = pd.create_qp(&QpInit::new(&server_cq, &server_cq))?;
//! let server = std::thread::spawn(move || -> Result<iwarp::QueuePair, iwarp::Error> {
//!     let req = listener.get_request(Some(Duration::from_secs(5)))?;
//!     req.accept(&server_qp, &ConnParams::default())?;
//!     Ok(server_qp) // dropping a queue pair closes its connection
//! });
//!
//! // The active side: connect, register a source buffer, RDMA Write, poll for the completion.
//! let cq = dev.create_cq(16)?;
//! let qp = pd.create_qp(&QpInit::new(&cq, &cq))?;
//! qp.connect(addr, &ConnParams::default())?;
//! let _server_qp = server.join().unwrap()?;
//! let src = pd.reg_mr(4096, Access::LOCAL_WRITE)?;
//! src.write(0, b"hello, iWARP")?;
//! qp.post_send(&[SendWr::write(1, &[src.sge(0, 12)], target.remote(0))])?;
//! let mut wc = [WorkCompletion::default(); 4];
//! let n = cq.wait(&mut wc, Some(Duration::from_secs(5)));
//! assert_eq!((n, wc[0].wr_id, wc[0].status), (1, 1, WcStatus::Success));
//! // The Write completes once handed to TCP; the data lands at the peer shortly after.
//! # std::thread::sleep(Duration::from_millis(100));
//! assert_eq!(target.to_vec(0, 12)?, b"hello, iWARP");
//! # Ok(())
//! # }
//! ```
//!
//! Where next: [`guide`] maps rdma-core calls (`ibv_post_send`, `rdma_accept`, ...) to this
//! API, lists what differs on iWARP, and shows what the compiler checks; [`testing`] gives a
//! connected pair of queue pairs for your own tests; `crates/iwarp/examples` has runnable
//! programs (`cargo run -p iwarp --example hello_write`; also `request_response`,
//! `read_file`, `atomic_counter`, `shared_port`, and with `--features tokio` `async_echo` and
//! `async_write`).
//!
//! # Async
//!
//! With the `tokio` feature, [`async_tokio`](async_tokio/index.html) has the async side of the API: connection
//! setup as futures (`QueuePair::connect_async`, `Listener::next_request`,
//! `ConnectRequest::accept_async`, `QueuePair::established`), the completions of many
//! queues on one [`CompletionChannel`] as a `Stream` (`CompletionStream`, on tokio's
//! `AsyncFd`), and `AsyncQueuePair`, whose every post returns a future that resolves with
//! the request's completion. None of them blocks a runtime thread, and dropping any of them
//! is safe: a dropped work-request future leaves the request's regions held by the queue
//! pair until its completion is reaped, so cancellation never frees or deregisters memory
//! the stack or the peer may still touch. `cargo run -p iwarp --features tokio --example
//! async_write` shows it end to end.
//!
//! Other runtimes need no feature: [`CompletionChannel`] and [`Listener`] implement
//! [`AsFd`](std::os::fd::AsFd), and [`QueuePair::event_fd`] gives a queue pair's event
//! descriptor (made on first use); each is readable while something waits to be taken by the
//! non-blocking calls
//! ([`CompletionChannel::try_get_event`] and [`CompletionQueue::poll`],
//! [`Listener::try_get_request`], [`QueuePair::poll_event`]); register them with the
//! runtime's reactor. [`CompletionChannel`]'s docs give the arming order.
//!
//! # Memory model
//!
//! A registered region is shared memory: the kernel places a peer's bytes into it and sends
//! from it on the stack's threads, at times the peer decides, while the application uses it
//! on its own. Under Rust's memory model that sharing is sound because of one rule: every
//! access Rust code makes to a region's bytes holds the region's access lock, shared to read
//! (a CRC over a payload, [`MemoryRegion::read`]/[`MemoryRegion::to_vec`]) and exclusive to
//! write (a peer's bytes copied in, an RFC 7306 atomic, [`MemoryRegion::write`]), and no
//! reference to the bytes outlives it. The kernel's own reads and writes, in system calls on
//! ranges the engine validated, are outside the program, like a device's DMA. A lock is held
//! for one copy or one CRC pass, never across a system call.
//!
//! So using a region from any thread while work or a peer uses it is never undefined
//! behaviour; what it yields is the usual RDMA rule:
//!
//! - bytes a peer may be writing are indeterminate until a later message or completion says
//!   the write is over (RFC 5040 §5: no "peeking" at a Write target);
//! - changing a buffer that a posted request sends, before that request completes, sends
//!   indeterminate bytes (and with CRC on, the peer may see a CRC error and end the
//!   connection).
//!
//! Regions from [`ProtectionDomain::reg_mr`] own their memory, so all of this holds with no
//! `unsafe` at all. [`ProtectionDomain::reg_mr_external`] registers memory the caller owns;
//! its `# Safety` section states the caller's side of the same contract.
//!
//! [`ProtectionDomain::reg_owned`] registers a buffer the application already has
//! (`Vec<u8>`, `Box<[u8]>`, `bytes::BytesMut` with the `bytes` feature) by moving it in,
//! with no `unsafe`, and [`OwnedRegion::into_inner`] hands it back after deregistering.
//! [`MemoryRegion::bytes`] and [`MemoryRegion::bytes_mut`] give a region's bytes in place,
//! as guards that hold the access lock (shared, exclusive) for their life: the same rule,
//! without the copy. A peer learns where to write or read from a [`RemoteAddr`] (STag,
//! Tagged Offset, length), sent in its 16-byte encoding ([`RemoteAddr::to_bytes`]).
//!
//! Caller-owned memory is the caller's again once [`MemoryRegion::deregister`] returns (or
//! the region's last handle is dropped): deregistration revokes the memory, waits for the
//! system calls under way on it (each pins the region for its duration) and for the copies
//! under way (it takes the access lock once), and from then on every access is refused, so
//! the stack never touches the bytes again. Work that still names the region fails instead
//! (see [`MemoryRegion::deregister`]).
//!
//! # Errors and logs
//!
//! Each call returns its own error type; a refused post names the request
//! ([`PostError::index`]) and the reason. A failed work request is a [`WorkCompletion`] with
//! a status, whose `Display` adds the Terminate cause it carries; [`QueuePair::terminated`]
//! keeps the connection's first cause. The crate logs through `tracing`: each queue pair has
//! a `qp` span (fields `qp`, `peer`) with debug events on connect, establishment, close,
//! Terminates and transport failures. Addresses may be IPv4 or IPv6 throughout.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod cq;
mod device;
mod error;
mod mem;
mod params;
mod qp;
mod runtime;
mod setup;
mod shared;
mod srq;
mod sys;
mod wr;

#[cfg(feature = "tokio")]
pub mod async_tokio;
pub mod guide;
pub mod testing;

pub use conn::{ConnInfo, Progress, QpEvent, Terminated};
pub use cq::{CompletionChannel, CompletionQueue, WcOpcode, WcStatus, WorkCompletion};
pub use device::Device;
pub use error::{
    AcceptError, AccessError, CmError, ConnectError, CreateError, DeregisterError, Error, ListenError, PostError,
    PostReason, RangeError, RegisterError, Result,
};
pub use iwarp_proto::cm::{Negotiated, Role};
pub use iwarp_proto::qp::{QpState, QpStats, RemoteAddr};
pub use iwarp_wire::mpa::{RtrType, RtrTypes};
pub use iwarp_wire::terminate::{TerminateCause, TerminateLayout};
pub use iwarp_wire::Stag;
pub use mem::{
    Access, MemoryRegion, OwnedBuf, OwnedRegion, ProtectionDomain, RegionBytes, RegionBytesMut, RekeyError, Sge,
};
pub use params::{ConnParams, Keepalive, Liveness, MpaOptions, DEFAULT_RECV_WAIT};
pub use qp::{QpCap, QpInit, QueuePair};
pub use setup::passive::{
    ConnectRequest, Incoming, ListenMode, Listener, PlainStream, SharedOptions, LINUX_MAX_PRIVATE_DATA,
};
pub use shared::{Capabilities, DeviceConfig, PostBatching};
pub use srq::SharedReceiveQueue;
pub use wr::{RecvWr, SendWr};

/// What tools and benchmarks need from the host: CPU time, the descriptor limit, resident
/// memory.
pub mod util {
    pub use crate::sys::{cpu_time, raise_fd_limit, resident_bytes};
}
