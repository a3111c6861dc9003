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
    /// Keep each FPDU within one TCP segment (default on), as RFC 5044 §4 asks of senders,
    /// whenever FPDUs are segment-sized (the peer is not this stack, or `large_fpdus` is off):
    /// FPDUs are handed to the socket in send calls marked `MSG_EOR`, cut where the next FPDU
    /// would cross a segment boundary, so that the kernel never joins two calls in one
    /// segment. Linux siw misreads an FPDU whose CRC arrives split across two segments; a
    /// peer behind a middlebox that re-segments the stream (QEMU's user-mode network) gains
    /// nothing. Costs a system call per run of whole segments. See `docs/deviations.md`.
    pub align_fpdus: bool,
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
            align_fpdus: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// TCP keepalive: probes sent on a connection that has been silent in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe (`TCP_KEEPIDLE`; whole seconds, at least 1).
    pub idle: Duration,
    /// Time between probes (`TCP_KEEPINTVL`; whole seconds, at least 1).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`). Linux ignores it
    /// while a [`Liveness::user_timeout`] is set: the user timeout decides then.
    pub count: u32,
}

/// How a connection notices a peer that is gone without closing: a machine that crashed or
/// lost power, a cable pulled, a firewall that drops everything. Without these settings TCP
/// notices only when it has data to send, after about 15 minutes of retransmissions, and an
/// idle connection never; with them the socket fails (`ETIMEDOUT`), and the queue pair
/// reports [`QpEvent::Error`](crate::QpEvent::Error) and flushes every outstanding work
/// request.
///
/// The defaults detect a vanished peer within 40 s, busy or idle:
///
/// - busy (data or a Read waiting for its answer): `TCP_USER_TIMEOUT` of 40 s, counted from
///   the first unacknowledged transmission;
/// - idle: keepalive probes after 20 s of silence, every 5 s; with a user timeout set, Linux
///   drops the connection at the first probe at which nothing has been heard for the user
///   timeout (40 s); without one, after `count` (6) unanswered probes (20 + 6 × 5 = 50 s).
///
/// The user timeout also bounds how long a live peer may keep its receive window closed: a
/// peer that does not read for longer (a stopped process, an application that does not poll
/// a [`Progress::Poll`](crate::Progress::Poll) queue pair) has its connection dropped by
/// Linux just as a vanished one. [`Liveness::OFF`] leaves both to the host's defaults
/// (keepalive off, no user timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Keepalive probes of an idle connection (`SO_KEEPALIVE` and its parameters); `None`
    /// leaves keepalive off.
    pub keepalive: Option<Keepalive>,
    /// `TCP_USER_TIMEOUT`: how long sent data (or a keepalive probe) may stay unacknowledged
    /// before the connection is dropped (millisecond resolution); `None` leaves the host's
    /// retransmission limit (`tcp_retries2`, about 15 minutes).
    pub user_timeout: Option<Duration>,
}

impl Liveness {
    /// No dead-peer detection beyond the host's defaults.
    pub const OFF: Liveness = Liveness { keepalive: None, user_timeout: None };

    /// Keepalive after `idle`, probes every `idle / 4` (at least 1 s), and a user timeout of
    /// `2 * idle`: a vanished peer is noticed in about twice `idle`, busy or idle.
    pub fn within(idle: Duration) -> Liveness {
        let idle = idle.max(Duration::from_secs(1));
        Liveness {
            keepalive: Some(Keepalive { idle, interval: (idle / 4).max(Duration::from_secs(1)), count: 6 }),
            user_timeout: Some(idle * 2),
        }
    }

    /// Applies the settings to a connection's socket (before or after it connects).
    pub(crate) fn apply(&self, sock: socket2::SockRef<'_>) -> std::io::Result<()> {
        match self.keepalive {
            Some(k) => {
                // Keepalive times are whole seconds to the kernel; round up, at least 1.
                let secs = |d: Duration| Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64);
                let ka = socket2::TcpKeepalive::new()
                    .with_time(secs(k.idle))
                    .with_interval(secs(k.interval))
                    .with_retries(k.count.max(1));
                sock.set_tcp_keepalive(&ka)?;
            }
            None => sock.set_keepalive(false)?,
        }
        // A zero user timeout is the host's default (no limit of its own).
        let ut = self.user_timeout.map(|d| d.max(Duration::from_millis(1)));
        sock.set_tcp_user_timeout(ut)
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            keepalive: Some(Keepalive { idle: Duration::from_secs(20), interval: Duration::from_secs(5), count: 6 }),
            user_timeout: Some(Duration::from_secs(40)),
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
    /// Dead-peer detection: TCP keepalive and `TCP_USER_TIMEOUT` on the connection's socket
    /// (see [`Liveness`] for the defaults, which notice a vanished peer within 40 s).
    pub liveness: Liveness,
    /// How long a Send (or Immediate Data) that finds no receive posted waits for one
    /// (default 2 s); `None` or zero terminates the connection at once, as RFC 5041 §7.2
    /// describes (DDP untagged buffer, "no buffer available").
    ///
    /// iWARP has no receiver-not-ready retry, and programs written for InfiniBand (qperf's
    /// `rc_bw`, fio's `--verb=send`) post Sends without waiting for the peer's receives. While
    /// a message waits, this side reads nothing more of the stream, so TCP's flow control
    /// holds the peer back; posting a receive (to the queue pair or its shared receive queue)
    /// resumes reading. Everything behind the waiting message waits with it, RDMA Writes and
    /// Read Responses included. A wait that runs out ends the connection with the same
    /// Terminate as no wait. Nothing on the wire changes (see `docs/deviations.md`).
    pub recv_wait: Option<Duration>,
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
            liveness: Liveness::default(),
            recv_wait: Some(DEFAULT_RECV_WAIT),
        }
    }
}

/// The default of [`ConnParams::recv_wait`].
pub const DEFAULT_RECV_WAIT: Duration = Duration::from_secs(2);

impl ConnParams {
    /// These parameters with dead-peer detection off ([`Liveness::OFF`]).
    pub fn without_liveness(mut self) -> Self {
        self.liveness = Liveness::OFF;
        self
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn default_liveness_notices_a_vanished_peer_within_60_seconds() {
        let l = Liveness::default();
        let k = l.keepalive.unwrap();
        let ut = l.user_timeout.unwrap();
        // Busy: the user timeout. Idle: the first probe at or after the user timeout.
        assert!(ut <= Duration::from_secs(60));
        let mut probe = k.idle;
        while probe < ut {
            probe += k.interval;
        }
        assert!(probe <= Duration::from_secs(60), "idle detection at {probe:?}");
        // Without the user timeout keepalive alone would take idle + count * interval.
        assert!(k.idle + k.interval * k.count <= Duration::from_secs(60));
    }

    #[test]
    fn liveness_settings_reach_the_socket() {
        let (a, _b) = pair();
        let l = Liveness {
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(3),
                interval: Duration::from_millis(1500),
                count: 4,
            }),
            user_timeout: Some(Duration::from_millis(4500)),
        };
        l.apply(socket2::SockRef::from(&a)).unwrap();
        let s = socket2::SockRef::from(&a);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(3));
        // Whole seconds, rounded up.
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(2));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_millis(4500)));
    }

    #[test]
    fn liveness_off_clears_keepalive_and_user_timeout() {
        let (a, _b) = pair();
        Liveness::default().apply(socket2::SockRef::from(&a)).unwrap();
        Liveness::OFF.apply(socket2::SockRef::from(&a)).unwrap();
        let s = socket2::SockRef::from(&a);
        assert!(!s.keepalive().unwrap());
        assert_eq!(s.tcp_user_timeout().unwrap(), None);
    }

    #[test]
    fn liveness_within_scales_with_idle() {
        let l = Liveness::within(Duration::from_secs(2));
        let k = l.keepalive.unwrap();
        assert_eq!((k.idle, k.interval), (Duration::from_secs(2), Duration::from_secs(1)));
        assert_eq!(l.user_timeout, Some(Duration::from_secs(4)));
    }
}
