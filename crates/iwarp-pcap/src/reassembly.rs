//! TCP reassembly: each connection's two directions as byte streams in sequence order, each byte
//! run labelled with the frame it came from.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;

use crate::packet::TcpSegment;

/// Out-of-order data held per direction while waiting for a hole to fill. Past this the hole is
/// taken as lost and the stream ends there.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the side that sent the SYN (or, without a SYN, sent the first segment).
    ClientToServer,
    /// The other way.
    ServerToClient,
}

impl Direction {
    /// The opposite direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }
}

/// A run of stream bytes that arrived in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Stream offset of the first byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
    /// Frame number (1-based, as Wireshark counts) that carried them.
    pub frame: u64,
}

/// A hole in the stream that never filled: data stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Stream offset where data stops.
    pub offset: u64,
    /// Frame number of the first segment seen beyond the hole, if any.
    pub next_frame: Option<u64>,
}

#[derive(Debug, Clone)]
struct Pending {
    /// The segment's payload, zero-filled past what was captured.
    data: Vec<u8>,
    /// How many of those bytes were captured.
    captured: usize,
    frame: u64,
}

/// One direction of a TCP connection, reassembled.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    data: Vec<u8>,
    runs: Vec<Run>,
    /// Sequence number of stream offset 0.
    base: Option<u32>,
    syn_frame: Option<u64>,
    fin_frame: Option<u64>,
    rst_frame: Option<u64>,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    gap: Option<Gap>,
    uncaptured: Vec<Range<u64>>,
    segments: u64,
    retransmitted_bytes: u64,
    out_of_order_segments: u64,
    conflicting_bytes: u64,
}

impl Stream {
    /// The bytes, in order, up to the end of the stream or the first hole.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Which frame carried which bytes, in stream order; the runs tile [`data`](Self::data).
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The frame that carried stream byte `offset`.
    pub fn frame_at(&self, offset: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.offset + r.len <= offset);
        self.runs.get(i).filter(|r| r.offset <= offset).map(|r| r.frame)
    }

    /// Frame of this direction's SYN.
    pub fn syn_frame(&self) -> Option<u64> {
        self.syn_frame
    }

    /// Frame of this direction's first FIN.
    pub fn fin_frame(&self) -> Option<u64> {
        self.fin_frame
    }

    /// Frame of this direction's first RST.
    pub fn rst_frame(&self) -> Option<u64> {
        self.rst_frame
    }

    /// Where the stream stops short, if data is missing.
    pub fn gap(&self) -> Option<Gap> {
        self.gap
    }

    /// Stream ranges that were sent but not captured (the snap length cut their frames short).
    /// They read as zeros in [`data`](Self::data).
    pub fn uncaptured(&self) -> &[Range<u64>] {
        &self.uncaptured
    }

    /// `true` if every byte of `range` was captured.
    pub fn is_captured(&self, range: Range<u64>) -> bool {
        !self.uncaptured.iter().any(|u| u.start < range.end && range.start < u.end)
    }

    /// Segments seen in this direction (with or without payload).
    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// Payload bytes that arrived again after they were already in the stream.
    pub fn retransmitted_bytes(&self) -> u64 {
        self.retransmitted_bytes
    }

    /// Segments that arrived ahead of a hole and waited for it to fill.
    pub fn out_of_order_segments(&self) -> u64 {
        self.out_of_order_segments
    }

    /// Retransmitted bytes whose value differs from the first copy (the first copy is kept).
    pub fn conflicting_bytes(&self) -> u64 {
        self.conflicting_bytes
    }

    fn next(&self) -> u64 {
        self.data.len() as u64
    }

    /// Stream offset of sequence number `seq`, taken as the one closest to the stream's end.
    fn offset_of(&self, base: u32, seq: u32) -> i64 {
        let next = self.next();
        let delta = seq.wrapping_sub(base).wrapping_sub(next as u32) as i32;
        next as i64 + i64::from(delta)
    }

    fn push(&mut self, frame: u64, seg: &TcpSegment<'_>) {
        self.segments += 1;
        if seg.flags.rst() && self.rst_frame.is_none() {
            self.rst_frame = Some(frame);
        }
        let mut seq = seg.seq;
        if seg.flags.syn() {
            if self.syn_frame.is_none() {
                self.syn_frame = Some(frame);
                self.base = Some(seq.wrapping_add(1));
            }
            // The SYN takes one sequence number; data on a SYN follows it.
            seq = seq.wrapping_add(1);
        }
        let base = *self.base.get_or_insert(seq);
        if seg.flags.fin() && self.fin_frame.is_none() {
            self.fin_frame = Some(frame);
        }
        if self.gap.is_some() {
            return;
        }
        let offset = self.offset_of(base, seq);
        if seg.truncated() {
            // The snap length cut the frame: keep the stream's numbering with zeros.
            let mut filled = seg.payload.to_vec();
            filled.resize(seg.wire_len, 0);
            self.add(frame, offset, &filled, seg.payload.len());
        } else if !seg.payload.is_empty() {
            self.add(frame, offset, seg.payload, seg.payload.len());
        }
    }

    /// Adds `payload` at `offset`; bytes from `captured` on were not captured.
    fn add(&mut self, frame: u64, offset: i64, payload: &[u8], captured: usize) {
        let end = offset + payload.len() as i64;
        // Bytes before the stream start (a capture that began mid-connection) are dropped.
        if end <= 0 {
            return;
        }
        let (offset, payload, captured) = if offset < 0 {
            let skip = (-offset) as usize;
            (0u64, &payload[skip..], captured.saturating_sub(skip))
        } else {
            (offset as u64, payload, captured)
        };
        let next = self.next();
        if offset > next {
            self.out_of_order_segments += 1;
            self.pending_bytes += payload.len();
            match self.pending.get(&offset) {
                Some(p) if p.data.len() >= payload.len() => self.pending_bytes -= payload.len(),
                Some(p) => {
                    self.pending_bytes -= p.data.len();
                    self.pending.insert(offset, Pending { data: payload.to_vec(), captured, frame });
                }
                None => {
                    self.pending.insert(offset, Pending { data: payload.to_vec(), captured, frame });
                }
            }
            if self.pending_bytes > MAX_PENDING_BYTES {
                self.close_gap();
            }
            return;
        }
        self.append(frame, offset, payload, captured);
        self.drain_pending();
    }

    /// Adds the part of `payload` (which starts at `offset` <= next) beyond the stream's end.
    fn append(&mut self, frame: u64, offset: u64, payload: &[u8], captured: usize) {
        let next = self.next();
        let overlap = ((next - offset) as usize).min(payload.len());
        if overlap > 0 {
            self.retransmitted_bytes += overlap as u64;
            let have = &self.data[offset as usize..offset as usize + overlap];
            self.conflicting_bytes += have.iter().zip(&payload[..overlap]).filter(|(a, b)| a != b).count() as u64;
        }
        let fresh = &payload[overlap..];
        if fresh.is_empty() {
            return;
        }
        match self.runs.last_mut() {
            Some(r) if r.frame == frame && r.offset + r.len == next => r.len += fresh.len() as u64,
            _ => self.runs.push(Run { offset: next, len: fresh.len() as u64, frame }),
        }
        self.data.extend_from_slice(fresh);
        // The part of the fresh bytes that was not captured.
        let lost = (offset + captured as u64).max(next)..self.next();
        if !lost.is_empty() {
            match self.uncaptured.last_mut() {
                Some(u) if u.end == lost.start => u.end = lost.end,
                _ => self.uncaptured.push(lost),
            }
        }
    }

    fn drain_pending(&mut self) {
        while let Some((&offset, _)) = self.pending.first_key_value() {
            if offset > self.next() {
                break;
            }
            if let Some(p) = self.pending.remove(&offset) {
                self.pending_bytes -= p.data.len();
                self.append(p.frame, offset, &p.data, p.captured);
            }
        }
    }

    /// Declares the stream ended at its first hole.
    fn close_gap(&mut self) {
        if let Some((_, p)) = self.pending.first_key_value() {
            self.gap = Some(Gap { offset: self.next(), next_frame: Some(p.frame) });
        }
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

/// A TCP connection: its endpoints and its two reassembled directions.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The side that sent the SYN (or, without one, the first segment seen).
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// Frame number of the first segment.
    pub first_frame: u64,
    /// Frame number of the last segment.
    pub last_frame: u64,
    /// Bytes the client sent.
    pub client_to_server: Stream,
    /// Bytes the server sent.
    pub server_to_client: Stream,
}

impl Connection {
    /// One direction's stream.
    pub fn stream(&self, dir: Direction) -> &Stream {
        match dir {
            Direction::ClientToServer => &self.client_to_server,
            Direction::ServerToClient => &self.server_to_client,
        }
    }

    /// The sender and receiver of a direction.
    pub fn endpoints(&self, dir: Direction) -> (SocketAddr, SocketAddr) {
        match dir {
            Direction::ClientToServer => (self.client, self.server),
            Direction::ServerToClient => (self.server, self.client),
        }
    }

    /// `true` when the client's SYN was captured.
    pub fn handshake_seen(&self) -> bool {
        self.client_to_server.syn_frame.is_some()
    }

    fn stream_mut(&mut self, dir: Direction) -> &mut Stream {
        match dir {
            Direction::ClientToServer => &mut self.client_to_server,
            Direction::ServerToClient => &mut self.server_to_client,
        }
    }

    fn finished(&self) -> bool {
        let s = (&self.client_to_server, &self.server_to_client);
        s.0.rst_frame.is_some() || s.1.rst_frame.is_some() || (s.0.fin_frame.is_some() && s.1.fin_frame.is_some())
    }
}

/// Sorts TCP segments into connections and reassembles them, one frame at a time.
#[derive(Debug, Default)]
pub struct Reassembler {
    connections: Vec<Connection>,
    /// Current connection per address pair, keyed with the lower address first.
    by_pair: HashMap<(SocketAddr, SocketAddr), usize>,
}

fn pair_key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the segment carried by frame number `frame` (1-based; frames must come in capture
    /// order).
    pub fn push(&mut self, frame: u64, seg: &TcpSegment<'_>) {
        let key = pair_key(seg.src, seg.dst);
        let pure_syn = seg.flags.syn() && !seg.flags.ack();
        let existing = self.by_pair.get(&key).copied().filter(|&i| {
            let c = &self.connections[i];
            // A new SYN on a finished connection, or with another initial sequence number, is
            // the address pair being reused.
            let reused = pure_syn
                && (c.finished()
                    || (c.client == seg.src
                        && c.client_to_server.syn_frame.is_some()
                        && c.client_to_server.base != Some(seg.seq.wrapping_add(1))));
            !reused
        });
        let index = match existing {
            Some(i) => i,
            None => {
                // A SYN-ACK seen first comes from the server.
                let (client, server) =
                    if seg.flags.syn() && seg.flags.ack() { (seg.dst, seg.src) } else { (seg.src, seg.dst) };
                self.connections.push(Connection {
                    client,
                    server,
                    first_frame: frame,
                    last_frame: frame,
                    client_to_server: Stream::default(),
                    server_to_client: Stream::default(),
                });
                self.by_pair.insert(key, self.connections.len() - 1);
                self.connections.len() - 1
            }
        };
        let c = &mut self.connections[index];
        c.last_frame = frame;
        let dir = if seg.src == c.client { Direction::ClientToServer } else { Direction::ServerToClient };
        c.stream_mut(dir).push(frame, seg);
    }

    /// Ends reassembly: holes that never filled end their streams. Connections come in the order
    /// of their first frame.
    pub fn finish(mut self) -> Vec<Connection> {
        for c in &mut self.connections {
            for dir in [Direction::ClientToServer, Direction::ServerToClient] {
                let s = c.stream_mut(dir);
                if !s.pending.is_empty() {
                    s.close_gap();
                }
            }
        }
        self.connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::TcpFlags;

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:7174";

    fn seg(src: &str, dst: &str, seq: u32, flags: u8, payload: &'static [u8]) -> TcpSegment<'static> {
        TcpSegment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq,
            ack: 0,
            flags: TcpFlags(flags),
            payload,
            wire_len: payload.len(),
        }
    }

    fn run(segs: &[TcpSegment<'static>]) -> Vec<Connection> {
        let mut r = Reassembler::new();
        for (i, s) in segs.iter().enumerate() {
            r.push(i as u64 + 1, s);
        }
        r.finish()
    }

    const SYN: u8 = TcpFlags::SYN;
    const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN | TcpFlags::ACK;

    #[test]
    fn in_order_with_handshake_and_fin() {
        let c = run(&[
            seg(C, S, 1000, SYN, b""),
            seg(S, C, 5000, SYNACK, b""),
            seg(C, S, 1001, ACK, b"hello "),
            seg(C, S, 1007, ACK, b"world"),
            seg(S, C, 5001, ACK, b"ok"),
            seg(C, S, 1012, FIN, b""),
            seg(S, C, 5003, FIN, b""),
        ]);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!(c.client, C.parse().unwrap());
        assert!(c.handshake_seen());
        assert_eq!(c.client_to_server.data(), b"hello world");
        assert_eq!(
            c.client_to_server.runs(),
            &[Run { offset: 0, len: 6, frame: 3 }, Run { offset: 6, len: 5, frame: 4 }]
        );
        assert_eq!(c.client_to_server.frame_at(5), Some(3));
        assert_eq!(c.client_to_server.frame_at(6), Some(4));
        assert_eq!(c.client_to_server.frame_at(11), None);
        assert_eq!(c.server_to_client.data(), b"ok");
        assert_eq!(c.client_to_server.fin_frame(), Some(6));
        assert_eq!(c.server_to_client.fin_frame(), Some(7));
        assert_eq!((c.first_frame, c.last_frame), (1, 7));
    }

    #[test]
    fn retransmission_overlap_and_reordering() {
        let c = run(&[
            seg(C, S, 1000, SYN, b""),
            seg(C, S, 1001, ACK, b"abcd"),
            seg(C, S, 1009, ACK, b"ijkl"),   // ahead of a hole
            seg(C, S, 1001, ACK, b"abcd"),   // plain retransmission
            seg(C, S, 1003, ACK, b"cdefgh"), // overlaps and fills the hole
            seg(C, S, 1011, ACK, b"KLmn"),   // overlaps with different bytes: first copy wins
        ]);
        let s = &c[0].client_to_server;
        assert_eq!(s.data(), b"abcdefghijklmn");
        assert_eq!(s.out_of_order_segments(), 1);
        assert_eq!(s.retransmitted_bytes(), 4 + 2 + 2);
        assert_eq!(s.conflicting_bytes(), 2);
        assert_eq!(s.frame_at(4), Some(5));
        assert_eq!(s.frame_at(8), Some(3));
        assert_eq!(s.frame_at(12), Some(6));
        assert!(s.gap().is_none());
    }

    #[test]
    fn a_hole_that_never_fills_ends_the_stream() {
        let c = run(&[seg(C, S, 1000, SYN, b""), seg(C, S, 1001, ACK, b"ab"), seg(C, S, 1010, ACK, b"zz")]);
        let s = &c[0].client_to_server;
        assert_eq!(s.data(), b"ab");
        assert_eq!(s.gap(), Some(Gap { offset: 2, next_frame: Some(3) }));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let c = run(&[seg(C, S, u32::MAX - 1, SYN, b""), seg(C, S, u32::MAX, ACK, b"ab"), seg(C, S, 1, ACK, b"cd")]);
        assert_eq!(c[0].client_to_server.data(), b"abcd");
    }

    #[test]
    fn capture_without_handshake_starts_at_first_segment() {
        let c = run(&[seg(S, C, 70, ACK, b"xy"), seg(C, S, 9, ACK, b"q"), seg(S, C, 68, ACK, b"vwxy")]);
        assert_eq!(c[0].client, S.parse().unwrap());
        assert!(!c[0].handshake_seen());
        // Bytes before the first segment seen are dropped; the rest is a retransmission.
        assert_eq!(c[0].client_to_server.data(), b"xy");
        assert_eq!(c[0].server_to_client.data(), b"q");
    }

    #[test]
    fn syn_ack_first_names_the_server_and_rst_is_recorded() {
        let c = run(&[seg(S, C, 5000, SYNACK, b""), seg(C, S, 1001, ACK, b"a"), seg(S, C, 5001, TcpFlags::RST, b"")]);
        assert_eq!(c[0].client, C.parse().unwrap());
        assert_eq!(c[0].server_to_client.rst_frame(), Some(3));
    }

    #[test]
    fn reused_address_pair_is_a_new_connection() {
        let c = run(&[
            seg(C, S, 1000, SYN, b""),
            seg(C, S, 1001, ACK, b"one"),
            seg(C, S, 1004, FIN, b""),
            seg(S, C, 7000, FIN, b""),
            seg(C, S, 1000, SYN, b""), // same ISN but the old one is finished
            seg(C, S, 1001, ACK, b"two"),
            seg(C, S, 9000, SYN, b""), // another ISN: a third connection
            seg(C, S, 9000, SYN, b""), // SYN retransmission: same connection
            seg(C, S, 9001, ACK, b"three"),
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].client_to_server.data(), b"one");
        assert_eq!(c[1].client_to_server.data(), b"two");
        assert_eq!(c[2].client_to_server.data(), b"three");
        assert_eq!(c[2].first_frame, 7);
    }

    #[test]
    fn bytes_the_snap_length_cut_read_as_zeros() {
        let mut t = seg(C, S, 1001, ACK, b"abc");
        t.wire_len = 6;
        let mut u = seg(C, S, 1010, ACK, b"z");
        u.wire_len = 2;
        let c = run(&[seg(C, S, 1000, SYN, b""), t, seg(C, S, 1007, ACK, b"ghi"), u]);
        let s = &c[0].client_to_server;
        assert_eq!(s.data(), b"abc\0\0\0ghiz\0");
        assert_eq!(s.uncaptured(), &[3..6, 10..11]);
        assert!(s.is_captured(0..3) && s.is_captured(6..10));
        assert!(!s.is_captured(2..4) && !s.is_captured(10..11));
        assert_eq!(s.gap(), None);
        assert_eq!(s.frame_at(4), Some(2));
    }
}
