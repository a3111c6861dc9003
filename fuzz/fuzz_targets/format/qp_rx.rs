//! The input format of the `qp_rx` fuzz target (documented at the top of `../qp_rx.rs`) and the
//! memory it registers, shared by the target (which decodes inputs) and the seed writer in
//! `crates/iwarp-proto/tests/fuzz_seeds.rs` (which encodes captured streams), so that both agree
//! on every byte and on the STags the regions get.
#![allow(dead_code)]

use iwarp_proto::mem::{Access, MrRef, PdId, RawMem, StagTable};

use super::reader::Reader;

/// Inputs are cut here: bounded input, bounded work and allocation.
pub const MAX_INPUT: usize = 64 << 10;
/// Commands after this many are ignored (each is followed by a full memory check).
pub const MAX_COMMANDS: usize = 1024;

/// Seed of the STag table. The STags of [`REGIONS`] follow from it and the registration order
/// alone (not from the memory), which is how seeds can name them.
pub const TABLE_SEED: u64 = 0x5eed_1ee7;

/// The protection domain of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The queue pair's.
    Main,
    /// Another one: the peer may never touch these regions.
    Other,
}

/// A registered region of the target.
#[derive(Debug, Clone, Copy)]
pub struct RegionSpec {
    /// Short name, for messages.
    pub name: &'static str,
    /// Length in bytes.
    pub len: usize,
    /// Rights.
    pub access: Access,
    /// Tagged Offset of the first byte.
    pub base: u64,
    /// Protection domain.
    pub domain: Domain,
}

/// RDMA Write target (large enough for direct placement of a steady stream of big payloads).
pub const W: usize = 0;
/// RDMA Read source: the peer may read it, never write it.
pub const R: usize = 1;
/// Atomic target.
pub const A: usize = 2;
/// Local only: receive buffers and Read/atomic sinks.
pub const L: usize = 3;
/// Local only, small: second scatter/gather elements.
pub const S: usize = 4;
/// Every right, but in another protection domain.
pub const X: usize = 5;
/// Remote write at the very top of the 64-bit Tagged Offset space.
pub const T: usize = 6;
/// Zero-length, remote write.
pub const Z: usize = 7;

/// The regions, registered in this order (PD `Main` is created before `Other`).
pub const REGIONS: [RegionSpec; 8] = [
    RegionSpec {
        name: "W",
        len: 16 << 10,
        access: Access::LOCAL_WRITE.union(Access::REMOTE_WRITE),
        base: 0x7f00_0001_0000,
        domain: Domain::Main,
    },
    RegionSpec { name: "R", len: 4 << 10, access: Access::REMOTE_READ, base: 0x7f00_0002_0000, domain: Domain::Main },
    RegionSpec {
        name: "A",
        len: 64,
        access: Access::REMOTE_ATOMIC.union(Access::REMOTE_READ),
        base: 0x7f00_0003_0000,
        domain: Domain::Main,
    },
    RegionSpec { name: "L", len: 8 << 10, access: Access::LOCAL_WRITE, base: 0x7f00_0004_0000, domain: Domain::Main },
    RegionSpec { name: "S", len: 256, access: Access::LOCAL_WRITE, base: 0x7f00_0005_0000, domain: Domain::Main },
    RegionSpec { name: "X", len: 1 << 10, access: Access::all(), base: 0x7f00_0006_0000, domain: Domain::Other },
    RegionSpec {
        name: "T",
        len: 256,
        access: Access::LOCAL_WRITE.union(Access::REMOTE_WRITE).union(Access::REMOTE_READ),
        base: u64::MAX - 256,
        domain: Domain::Main,
    },
    RegionSpec {
        name: "Z",
        len: 0,
        access: Access::REMOTE_WRITE.union(Access::REMOTE_READ),
        base: 0,
        domain: Domain::Main,
    },
];

/// Registers the regions in `t` in their fixed order, with the memory `mem(i)` gives for
/// region `i`; returns the main and the other protection domain and the regions.
pub fn register_all(t: &StagTable, mut mem: impl FnMut(usize) -> RawMem) -> (PdId, PdId, Vec<MrRef>) {
    let main = t.new_pd();
    let other = t.new_pd();
    let mrs = REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let pd = if r.domain == Domain::Main { main } else { other };
            t.register(mem(i), pd, r.access, r.base).expect("a fresh table has room")
        })
        .collect();
    (main, other, mrs)
}

/// Canary bytes before, between and after the regions.
pub const GUARD: usize = 64;

/// Offset of region `i` in the backing buffer (regions are 64-byte aligned, so atomics line up).
pub fn region_offset(i: usize) -> usize {
    let mut at = GUARD;
    for r in &REGIONS[..i] {
        at += r.len.next_multiple_of(64) + GUARD;
    }
    at
}

/// Length of the backing buffer.
pub fn backing_len() -> usize {
    region_offset(REGIONS.len())
}

/// How the queue pair starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupSel {
    /// Initiator, client/server.
    Initiator,
    /// Initiator in peer-to-peer mode, sending this RTR (0 Send, 1 Write, 2 Read) first.
    InitiatorRtr(u8),
    /// Responder, client/server; `send_first` waives RFC 5044's "initiator sends first".
    Responder { send_first: bool },
    /// Responder in peer-to-peer mode, accepting these RTR types (bit 0 Send, 1 Write, 2 Read).
    ResponderRtr(u8),
}

/// The first four bytes: what MPA negotiation settled.
///
/// - byte 0: bit 0 CRC, bit 1 RFC 7306, bit 2 markers toward us, bit 3 markers from us,
///   bits 4-5 startup (initiator, initiator with RTR, responder, responder with RTR), bit 6
///   `send_first` for a client/server responder;
/// - byte 1: the RTR (initiator: `% 3`) or RTR types (responder: bits 0-2);
/// - byte 2: IRD (low nibble) and ORD (high nibble);
/// - byte 3: MULPDU, `128 + 256 * byte` clamped by the engine (0: 128, 5: 1408, 255: 65408).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub crc: bool,
    pub rfc7306: bool,
    pub recv_markers: bool,
    pub send_markers: bool,
    pub startup: StartupSel,
    pub ird: u8,
    pub ord: u8,
    pub mulpdu: u8,
}

impl Header {
    pub fn decode(b: [u8; 4]) -> Header {
        let startup = match (b[0] >> 4) & 3 {
            0 => StartupSel::Initiator,
            1 => StartupSel::InitiatorRtr(b[1] % 3),
            2 => StartupSel::Responder { send_first: b[0] & 0x40 != 0 },
            _ => StartupSel::ResponderRtr(b[1] & 7),
        };
        Header {
            crc: b[0] & 1 != 0,
            rfc7306: b[0] & 2 != 0,
            recv_markers: b[0] & 4 != 0,
            send_markers: b[0] & 8 != 0,
            startup,
            ird: b[2] & 15,
            ord: b[2] >> 4,
            mulpdu: b[3],
        }
    }

    pub fn encode(&self) -> [u8; 4] {
        let (sel, extra, rtr) = match self.startup {
            StartupSel::Initiator => (0, 0, 0),
            StartupSel::InitiatorRtr(t) => (1, 0, t),
            StartupSel::Responder { send_first } => (2, u8::from(send_first) << 6, 0),
            StartupSel::ResponderRtr(t) => (3, 0, t),
        };
        let b0 = u8::from(self.crc)
            | u8::from(self.rfc7306) << 1
            | u8::from(self.recv_markers) << 2
            | u8::from(self.send_markers) << 3
            | sel << 4
            | extra;
        [b0, rtr, (self.ird & 15) | self.ord << 4, self.mulpdu]
    }

    /// The MULPDU this header asks for.
    pub fn mulpdu_len(&self) -> usize {
        128 + 256 * usize::from(self.mulpdu)
    }
}

/// A scatter/gather element in one of the regions: `region % 8`, `offset: u16`, `len: u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSge {
    pub region: u8,
    pub offset: u16,
    pub len: u16,
}

/// The operation of a posted send (`op % 9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOpSel {
    /// 0
    Send,
    /// 1: `stag: u32`
    SendWithInvalidate { stag: u32 },
    /// 2: `stag: u32`, `to: u64`
    Write { stag: u32, to: u64 },
    /// 3: `stag: u32`, `to: u64`, `imm: u64`
    WriteWithImmediate { stag: u32, to: u64, imm: u64 },
    /// 4: `imm: u64`
    Immediate { imm: u64 },
    /// 5: `stag: u32`, `to: u64`; the sink is the first element.
    Read { stag: u32, to: u64 },
    /// 6: `stag: u32`, `to: u64`, `add: u64`; the sink is the first element.
    FetchAdd { stag: u32, to: u64, add: u64 },
    /// 7: `stag: u32`, `to: u64`, `compare: u64`, `swap: u64`.
    CompareSwap { stag: u32, to: u64, compare: u64, swap: u64 },
    /// 8: `region: u8`, the region (`% 8`) whose STag is invalidated.
    LocalInvalidate { region: u8 },
}

/// A posted send: the operation, a flags byte (bit 0 signaled, bit 1 solicited, bit 2 fence,
/// bit 3 inline payload), then the payload: inline `len: u8` and that many bytes, or
/// `n: u8` (`n % 4` elements) [`LocalSge`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCmd {
    pub op: SendOpSel,
    pub signaled: bool,
    pub solicited: bool,
    pub fence: bool,
    pub payload: PayloadSel,
}

/// Where a posted send's payload comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadSel {
    Inline(Vec<u8>),
    Sges(Vec<LocalSge>),
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Peer bytes, handed to the queue pair as its receive plans ask, each read taking at most
    /// `read_max` bytes (0: no limit beyond the plan's).
    Feed { read_max: u16, bytes: Vec<u8> },
    /// Post a receive.
    PostRecv { sges: Vec<LocalSge> },
    /// Post a send work request.
    PostSend(SendCmd),
    /// Graceful disconnect.
    Disconnect,
    /// Advance the clock and call `handle_timeout`.
    Timeout { ms: u16 },
    /// End of stream from the peer.
    Eof,
    /// The connection failed.
    TransportError,
    /// From now on the socket takes at most this many bytes after each command (0: the socket
    /// is full; 0xffff: no limit).
    TxBudget { bytes: u16 },
    /// `wake_silent_peer(first_ms, count)`.
    Wake { first_ms: u16, count: u8 },
    /// `handle_mss` (the field is the MSS).
    SetMulpdu { mulpdu: u16 },
}

fn sge(r: &mut Reader<'_>) -> LocalSge {
    LocalSge { region: r.u8() % REGIONS.len() as u8, offset: r.u16(), len: r.u16() }
}

/// Splits an input into its header and commands.
pub fn decode(input: &[u8]) -> (Header, Vec<Cmd>) {
    let input = &input[..input.len().min(MAX_INPUT)];
    let mut r = Reader::new(input);
    let h = Header::decode([r.u8(), r.u8(), r.u8(), r.u8()]);
    let mut cmds = Vec::new();
    while !r.is_empty() && cmds.len() < MAX_COMMANDS {
        let cmd = match r.u8() % 10 {
            0 => {
                let len = r.u16();
                let read_max = r.u16();
                Cmd::Feed { read_max, bytes: r.bytes(usize::from(len)).to_vec() }
            }
            1 => {
                let n = 1 + usize::from(r.u8() % 4);
                Cmd::PostRecv { sges: (0..n).map(|_| sge(&mut r)).collect() }
            }
            2 => {
                let op = match r.u8() % 9 {
                    0 => SendOpSel::Send,
                    1 => SendOpSel::SendWithInvalidate { stag: r.u32() },
                    2 => SendOpSel::Write { stag: r.u32(), to: r.u64() },
                    3 => SendOpSel::WriteWithImmediate { stag: r.u32(), to: r.u64(), imm: r.u64() },
                    4 => SendOpSel::Immediate { imm: r.u64() },
                    5 => SendOpSel::Read { stag: r.u32(), to: r.u64() },
                    6 => SendOpSel::FetchAdd { stag: r.u32(), to: r.u64(), add: r.u64() },
                    7 => SendOpSel::CompareSwap { stag: r.u32(), to: r.u64(), compare: r.u64(), swap: r.u64() },
                    _ => SendOpSel::LocalInvalidate { region: r.u8() % REGIONS.len() as u8 },
                };
                let flags = r.u8();
                let payload = if flags & 8 != 0 {
                    let n = usize::from(r.u8());
                    PayloadSel::Inline(r.bytes(n).to_vec())
                } else {
                    let n = usize::from(r.u8() % 4);
                    PayloadSel::Sges((0..n).map(|_| sge(&mut r)).collect())
                };
                Cmd::PostSend(SendCmd {
                    op,
                    signaled: flags & 1 != 0,
                    solicited: flags & 2 != 0,
                    fence: flags & 4 != 0,
                    payload,
                })
            }
            3 => Cmd::Disconnect,
            4 => Cmd::Timeout { ms: r.u16() },
            5 => Cmd::Eof,
            6 => Cmd::TransportError,
            7 => Cmd::TxBudget { bytes: r.u16() },
            8 => Cmd::Wake { first_ms: r.u16(), count: r.u8() },
            _ => Cmd::SetMulpdu { mulpdu: r.u16() },
        };
        cmds.push(cmd);
    }
    (h, cmds)
}

fn put_sge(out: &mut Vec<u8>, s: &LocalSge) {
    out.push(s.region);
    out.extend_from_slice(&s.offset.to_le_bytes());
    out.extend_from_slice(&s.len.to_le_bytes());
}

/// The input that [`decode`] reads back as `h` and `cmds` (a `Feed` longer than 65535 bytes,
/// or more than 3 send or 4 receive elements, cannot be encoded).
pub fn encode(h: &Header, cmds: &[Cmd]) -> Vec<u8> {
    let mut out = h.encode().to_vec();
    for c in cmds {
        match c {
            Cmd::Feed { read_max, bytes } => {
                let len = u16::try_from(bytes.len()).expect("a feed of at most 65535 bytes");
                out.push(0);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&read_max.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Cmd::PostRecv { sges } => {
                assert!((1..=4).contains(&sges.len()));
                out.push(1);
                out.push(sges.len() as u8 - 1);
                sges.iter().for_each(|s| put_sge(&mut out, s));
            }
            Cmd::PostSend(s) => {
                out.push(2);
                let (op, args): (u8, Vec<u8>) = match s.op {
                    SendOpSel::Send => (0, vec![]),
                    SendOpSel::SendWithInvalidate { stag } => (1, stag.to_le_bytes().to_vec()),
                    SendOpSel::Write { stag, to } => (2, [&stag.to_le_bytes()[..], &to.to_le_bytes()].concat()),
                    SendOpSel::WriteWithImmediate { stag, to, imm } => {
                        (3, [&stag.to_le_bytes()[..], &to.to_le_bytes(), &imm.to_le_bytes()].concat())
                    }
                    SendOpSel::Immediate { imm } => (4, imm.to_le_bytes().to_vec()),
                    SendOpSel::Read { stag, to } => (5, [&stag.to_le_bytes()[..], &to.to_le_bytes()].concat()),
                    SendOpSel::FetchAdd { stag, to, add } => {
                        (6, [&stag.to_le_bytes()[..], &to.to_le_bytes(), &add.to_le_bytes()].concat())
                    }
                    SendOpSel::CompareSwap { stag, to, compare, swap } => (
                        7,
                        [&stag.to_le_bytes()[..], &to.to_le_bytes(), &compare.to_le_bytes(), &swap.to_le_bytes()]
                            .concat(),
                    ),
                    SendOpSel::LocalInvalidate { region } => (8, vec![region]),
                };
                out.push(op);
                out.extend_from_slice(&args);
                let inline = matches!(s.payload, PayloadSel::Inline(_));
                out.push(
                    u8::from(s.signaled) | u8::from(s.solicited) << 1 | u8::from(s.fence) << 2 | u8::from(inline) << 3,
                );
                match &s.payload {
                    PayloadSel::Inline(b) => {
                        out.push(u8::try_from(b.len()).expect("inline payload of at most 255 bytes"));
                        out.extend_from_slice(b);
                    }
                    PayloadSel::Sges(v) => {
                        assert!(v.len() <= 3);
                        out.push(v.len() as u8);
                        v.iter().for_each(|s| put_sge(&mut out, s));
                    }
                }
            }
            Cmd::Disconnect => out.push(3),
            Cmd::Timeout { ms } => {
                out.push(4);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Cmd::Eof => out.push(5),
            Cmd::TransportError => out.push(6),
            Cmd::TxBudget { bytes } => {
                out.push(7);
                out.extend_from_slice(&bytes.to_le_bytes());
            }
            Cmd::Wake { first_ms, count } => {
                out.push(8);
                out.extend_from_slice(&first_ms.to_le_bytes());
                out.push(*count);
            }
            Cmd::SetMulpdu { mulpdu } => {
                out.push(9);
                out.extend_from_slice(&mulpdu.to_le_bytes());
            }
        }
    }
    out
}
