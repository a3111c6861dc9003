//! # iwarp-proto
//!
//! The sans-IO engines of the iWARP stack:
//! - [`mem`]: protection domains, registered regions, the STag table and the single access
//!   check (RFC 5041 §7.2, RFC 5040 §7.2);
//! - [`qp`]: one connection's RDMAP/DDP/MPA engine in full operation — segmentation into
//!   FPDUs referencing registered memory, receive plans for direct placement, Read/atomic
//!   queues, Terminate on every protocol violation (RFC 5040, 5041, 5044, 7306);
//! - [`cm`]: MPA connection setup, revision 1 and 2 with RFC 6581 IRD/ORD and RTR
//!   negotiation, as initiator and responder, with timeouts.
//!
//! Nothing here opens a socket, reads a clock or spawns a thread: time is a parameter, bytes
//! come in through `handle_*` calls and go out through `poll_*` calls, so every behaviour can
//! be replayed in tests. The only shared state is the STag table and shared receive queues,
//! behind their own locks. `unsafe` is confined to `mem::raw`, the memory behind a region.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cm;
pub mod mem;
pub mod qp;
