//! # iwarp-wire
//!
//! Byte-exact codecs for every frame of the iWARP protocol suite, as Linux siw and iWARP NICs put
//! them on the wire:
//!
//! - [`mpa`]: MPA (RFC 5044, with the RFC 6581 enhanced connection setup): Request and Reply
//!   frames, FPDU framing with pad, CRC and markers, MULPDU, and an incremental [`mpa::Deframer`]
//!   that tells its caller what the next bytes of the stream are so payload can be read straight
//!   into its destination.
//! - [`ddp`]: DDP (RFC 5041) tagged and untagged segment headers.
//! - [`rdmap`]: RDMAP (RFC 5040, RFC 7306): the opcode table ([`rdmap::OPCODES`]) that header
//!   validation, the engine and the tools read, the validated segment header, Read Request,
//!   Atomic Request/Response and Immediate Data bodies.
//! - [`terminate`]: the Terminate message and every error code point, with the Linux siw bit
//!   layout recognised on receive.
//! - [`crc`]: CRC32c as MPA uses it, through `crc-fast`.
//! - [`payload`]: how the codecs read payload they may not borrow (memory shared with the
//!   network).
//!
//! This crate does no I/O, keeps no clock and allocates nothing on the parsing paths: it turns
//! bytes into values and values into bytes. Bytes from a peer never make it panic; every
//! malformed input is an [`Error`] that knows the Terminate an RFC assigns to it
//! ([`Error::terminate_cause`]).
//!
//! What it does not do: connection management, memory validation or any state beyond one
//! stream's framing; those live in `iwarp-proto`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod macros;

pub mod crc;
pub mod ddp;
mod error;
pub mod mpa;
pub mod payload;
pub mod rdmap;
pub mod terminate;

pub use ddp::{Msn, Placement, QueueNumber, Stag, TaggedOffset};
pub use error::Error;
pub use payload::PayloadSource;
pub use rdmap::{OpDesc, Opcode, Routed, SegmentHeader};
pub use terminate::TerminateCause;
