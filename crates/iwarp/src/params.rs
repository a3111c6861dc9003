//! Parameters of connection setup (rdma_cm's `rdma_conn_param`, and the MPA options of
//! RFC 5044 and RFC 6581), shared by the active and the passive side.

use iwarp_proto::cm::MpaConfig;
use iwarp_wire::mpa::RtrTypes;
use std::net::SocketAddr;
use std::time::Duration;

/// MPA options of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpaOptions {
    /// MPA revision to initiate with: 2 (default, RFC 6581 IRD/ORD exchange) or 1. A listener
    /// answers either revision.
    pub revision: u8,
    /// Ask for CRC (default). CRC is off only if both sides decline (RFC 5044 §4.4).
    pub crc: bool,
    /// Ask the peer to insert markers.
    pub markers: bool,
    /// Peer-to-peer mode: the RTR types this side offers (connect) or accepts (listen).
    pub peer_to_peer: Option<RtrTypes>,
    /// Offer or accept RFC 7306 atomics and Immediate Data (only used if the peer agrees).
    pub rfc7306: bool,
    /// Offer or accept FPDUs larger than the TCP MSS (default on). Only a peer that is this
    /// stack agrees (Linux siw and hardware keep segment-sized FPDUs); with it, payloads are
    /// read straight into place and sent without a copy at any MTU, as over loopback. See
    /// `docs/deviations.md`.
    pub large_fpdus: bool,
    /// How long to wait for the peer's MPA frame.
    pub timeout: Duration,
}

impl Default for MpaOptions {
    fn default() -> Self {
        MpaOptions {
            revision: 2,
            crc: true,
            markers: false,
            peer_to_peer: None,
            rfc7306: true,
            large_fpdus: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Parameters of `connect` and `accept` (rdma_cm's `rdma_conn_param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// Private data for the peer: at most 508 bytes (512 less the RFC 6581 block). Linux siw
    /// drops connections whose private data (with that block) exceeds 256 bytes.
    pub private_data: Vec<u8>,
    /// Inbound RDMA Read/atomic depth this side offers (IRD).
    pub responder_resources: u16,
    /// Outbound RDMA Read/atomic depth this side wants (ORD).
    pub initiator_depth: u16,
    /// MPA options.
    pub mpa: MpaOptions,
    /// Local address to bind before connecting (rdma_cm's source address); the host picks
    /// when `None`. Ignored by `accept`.
    pub source: Option<SocketAddr>,
    /// Passive side only: let this side send before the initiator's first FPDU arrives.
    /// RFC 5044 §7.1.2 forbids it and this stack waits by default; Linux siw does not wait,
    /// and applications built on that (perftest's `ib_write_lat` server writes first) need
    /// it. Use it only when the protocol above guarantees that the initiator has finished the
    /// MPA exchange before this side's first message (e.g. a round trip on another
    /// connection); an initiator that receives an FPDU glued to the MPA Reply may close the
    /// connection (Linux siw does). Ignored in peer-to-peer mode, where the RTR settles it.
    pub responder_sends_first: bool,
    /// Active side only (default on): while the responder has sent nothing, follow this
    /// side's first FPDU with a zero-length RDMA Write after 50 ms, then at doubling
    /// intervals, at most 8 times. Linux siw starts watching an accepted socket only after
    /// sending its MPA Reply, and an FPDU (or RTR) that arrives in between stays unread until
    /// more bytes arrive; the zero-length Write is such bytes, and RFC 5041 §7.2 has every
    /// receiver accept it without checking its STag (see `docs/interop.md`).
    pub wake_silent_responder: bool,
}

impl Default for ConnParams {
    fn default() -> Self {
        ConnParams {
            private_data: Vec::new(),
            responder_resources: 16,
            initiator_depth: 16,
            mpa: MpaOptions::default(),
            source: None,
            responder_sends_first: false,
            wake_silent_responder: true,
        }
    }
}

impl ConnParams {
    pub(crate) fn mpa_config(&self, max_rd_atomic: u16) -> MpaConfig {
        MpaConfig {
            revision: self.mpa.revision,
            crc: self.mpa.crc,
            markers: self.mpa.markers,
            peer_to_peer: self.mpa.peer_to_peer,
            rfc7306: self.mpa.rfc7306,
            large_fpdus: self.mpa.large_fpdus,
            max_rd_atomic,
            timeout: self.mpa.timeout,
        }
    }
}
