//! The input format of the `cm_handshake` fuzz target (documented at the top of
//! `../cm_handshake.rs`), shared by the target (which decodes inputs) and the seed writer in
//! `crates/iwarp-proto/tests/fuzz_seeds.rs` (which encodes captured MPA exchanges).
#![allow(dead_code)]

use super::reader::Reader;

/// Inputs are cut here.
pub const MAX_INPUT: usize = 16 << 10;
/// Commands after this many are ignored.
pub const MAX_COMMANDS: usize = 512;

/// Which engines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Our initiator; the input plays the responder.
    Initiator,
    /// Our responder; the input plays the initiator.
    Responder,
    /// Our initiator and our responder, the input choosing how the bytes are cut.
    Loopback,
}

/// One side's MPA preferences and its own values.
///
/// `revision: u8`, `flags: u8` (bit 0 CRC, bit 1 markers, bit 2 RFC 7306, bit 3 peer-to-peer,
/// bits 4-6 its RTR types Send, Write, Read), `max_rd_atomic: u16`, `ird: u16`, `ord: u16`,
/// `timeout_ms: u16`, private data (`len: u16`, bytes; the length is taken `% 600`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideCfg {
    pub revision: u8,
    pub flags: u8,
    pub max_rd_atomic: u16,
    pub ird: u16,
    pub ord: u16,
    pub timeout_ms: u16,
    pub private_data: Vec<u8>,
}

/// Flag bits of [`SideCfg::flags`] and [`Cmd::Prefs`].
pub mod flag {
    pub const CRC: u8 = 0x01;
    pub const MARKERS: u8 = 0x02;
    pub const RFC7306: u8 = 0x04;
    pub const P2P: u8 = 0x08;
    pub const RTR_SEND: u8 = 0x10;
    pub const RTR_WRITE: u8 = 0x20;
    pub const RTR_READ: u8 = 0x40;
    pub const LARGE_FPDUS: u8 = 0x80;
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Bytes from the input's side, to our engine (mode 2: bytes a third party slips into the
    /// stream toward the side that waits).
    Feed(Vec<u8>),
    /// Advance the clock by `ms` and check both deadlines.
    Timeout(u16),
    /// The responder accepts with these depths and private data.
    Accept { ird: u16, ord: u16, private_data: Vec<u8> },
    /// The responder rejects with this private data.
    Reject(Vec<u8>),
    /// Mode 2: hand the next `n` bytes in flight (0: all of them) to their receiver.
    Deliver(u16),
    /// The responder's application changes its preferences (`config_mut`) before answering.
    Prefs(u8),
}

fn private_data(r: &mut Reader<'_>) -> Vec<u8> {
    let n = usize::from(r.u16()) % 600;
    r.bytes(n).to_vec()
}

fn side(r: &mut Reader<'_>) -> SideCfg {
    SideCfg {
        revision: r.u8(),
        flags: r.u8(),
        max_rd_atomic: r.u16(),
        ird: r.u16(),
        ord: r.u16(),
        timeout_ms: r.u16(),
        private_data: private_data(r),
    }
}

/// Splits an input into its mode, sides and commands.
pub fn decode(input: &[u8]) -> (Mode, Vec<SideCfg>, Vec<Cmd>) {
    let input = &input[..input.len().min(MAX_INPUT)];
    let mut r = Reader::new(input);
    let mode = match r.u8() % 3 {
        0 => Mode::Initiator,
        1 => Mode::Responder,
        _ => Mode::Loopback,
    };
    let mut sides = vec![side(&mut r)];
    if mode == Mode::Loopback {
        sides.push(side(&mut r));
    }
    let mut cmds = Vec::new();
    while !r.is_empty() && cmds.len() < MAX_COMMANDS {
        cmds.push(match r.u8() % 6 {
            0 => {
                let n = usize::from(r.u16());
                Cmd::Feed(r.bytes(n).to_vec())
            }
            1 => Cmd::Timeout(r.u16()),
            2 => Cmd::Accept { ird: r.u16(), ord: r.u16(), private_data: private_data(&mut r) },
            3 => Cmd::Reject(private_data(&mut r)),
            4 => Cmd::Deliver(r.u16()),
            _ => Cmd::Prefs(r.u8()),
        });
    }
    (mode, sides, cmds)
}

fn put_pd(out: &mut Vec<u8>, pd: &[u8]) {
    assert!(pd.len() < 600);
    out.extend_from_slice(&(pd.len() as u16).to_le_bytes());
    out.extend_from_slice(pd);
}

/// The input that [`decode`] reads back as `mode`, `sides` and `cmds`.
pub fn encode(mode: Mode, sides: &[SideCfg], cmds: &[Cmd]) -> Vec<u8> {
    let mut out = vec![match mode {
        Mode::Initiator => 0,
        Mode::Responder => 1,
        Mode::Loopback => 2,
    }];
    assert_eq!(sides.len(), if mode == Mode::Loopback { 2 } else { 1 });
    for s in sides {
        out.push(s.revision);
        out.push(s.flags);
        for v in [s.max_rd_atomic, s.ird, s.ord, s.timeout_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_pd(&mut out, &s.private_data);
    }
    for c in cmds {
        match c {
            Cmd::Feed(b) => {
                out.push(0);
                out.extend_from_slice(&u16::try_from(b.len()).expect("at most 65535 bytes").to_le_bytes());
                out.extend_from_slice(b);
            }
            Cmd::Timeout(ms) => {
                out.push(1);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Cmd::Accept { ird, ord, private_data } => {
                out.push(2);
                out.extend_from_slice(&ird.to_le_bytes());
                out.extend_from_slice(&ord.to_le_bytes());
                put_pd(&mut out, private_data);
            }
            Cmd::Reject(pd) => {
                out.push(3);
                put_pd(&mut out, pd);
            }
            Cmd::Deliver(n) => {
                out.push(4);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Cmd::Prefs(f) => {
                out.push(5);
                out.push(*f);
            }
        }
    }
    out
}
