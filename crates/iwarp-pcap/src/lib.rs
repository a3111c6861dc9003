//! # iwarp-pcap
//!
//! Captures in, byte streams out, and back:
//!
//! - [`read_file`] / [`read_bytes`] read a pcap or pcapng capture (Ethernet, Linux cooked SLL v1
//!   and v2 as captured on the `any` device, BSD loopback, raw IP), decode IPv4/IPv6 and TCP, and
//!   reassemble every TCP connection into its two directional byte streams in sequence order.
//!   SYN, retransmitted and overlapping segments, segments out of order (up to
//!   [`MAX_PENDING_BYTES`] ahead of a hole), FIN and RST are handled; every byte run remembers the
//!   frame it came from, so a decoder of the stream can name frames as Wireshark numbers them.
//!   Bytes a snap length cut off keep their place in the stream as zeros and are listed by
//!   [`Stream::uncaptured`], so headers past them still decode.
//! - [`Conversation`] writes the reverse: a scripted conversation `[(Direction, bytes)]` between
//!   two addresses as a pcap with a SYN/SYN-ACK/ACK handshake, consistent sequence and
//!   acknowledgment numbers, segments of a chosen maximum size and a FIN exchange, for golden
//!   tests and for tshark.
//!
//! What it does not do: IP fragment reassembly (fragments are skipped), TCP checksum
//! verification, or recovery past a hole in a stream (the stream ends there and
//! [`Stream::gap`] says where).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod packet;
mod reassembly;
mod write;

use std::path::Path;
use std::time::Duration;

pub use error::Error;
pub use packet::{decode, LinkType, NotTcp, TcpFlags, TcpSegment};
pub use reassembly::{Connection, Direction, Gap, Reassembler, Run, Stream, MAX_PENDING_BYTES};
pub use write::{write_conversation, write_frames, Conversation, ConversationOptions, Frame, MAX_SEGMENT};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::TsResolution;

/// A capture file, reassembled.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The link type of the (first) interface.
    pub link: LinkType,
    /// Frames in the file.
    pub frames: u64,
    /// Frames that carried no TCP segment (other protocols, fragments, malformed headers).
    pub non_tcp_frames: u64,
    /// Timestamp of each frame, by frame number minus one.
    pub timestamps: Vec<Duration>,
    /// TCP connections in the order of their first frame.
    pub connections: Vec<Connection>,
}

/// Reads and reassembles the capture at `path`.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; otherwise as [`read_bytes`].
pub fn read_file(path: impl AsRef<Path>) -> Result<Capture, Error> {
    read_bytes(&std::fs::read(path)?)
}

const PCAP_MAGICS: [[u8; 4]; 4] =
    [[0xD4, 0xC3, 0xB2, 0xA1], [0xA1, 0xB2, 0xC3, 0xD4], [0x4D, 0x3C, 0xB2, 0xA1], [0xA1, 0xB2, 0x3C, 0x4D]];
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

/// Reads and reassembles a capture held in memory (pcap, or pcapng).
///
/// # Errors
/// [`Error::NotPcap`] for another format, [`Error::Pcap`] for a malformed file,
/// [`Error::UnsupportedLinkType`] for a link type [`LinkType`] does not cover.
pub fn read_bytes(bytes: &[u8]) -> Result<Capture, Error> {
    let magic: [u8; 4] = bytes.get(..4).and_then(|m| m.try_into().ok()).ok_or(Error::NotPcap)?;
    let mut builder = Builder::default();
    if PCAP_MAGICS.contains(&magic) {
        let mut r = PcapReader::new(bytes)?;
        let h = r.header();
        let raw_link = u32::from(h.datalink);
        let link = LinkType::from_linktype(raw_link).ok_or(Error::UnsupportedLinkType(raw_link))?;
        builder.link = Some(link);
        // Raw packets: the length checks of the parsed form reject captures whose original
        // lengths exceed the snap length, which truncated captures legitimately have.
        while let Some(p) = r.next_raw_packet() {
            let p = p?;
            let frac = u64::from(p.ts_frac);
            let nanos = if h.ts_resolution == TsResolution::MicroSecond { frac * 1000 } else { frac };
            let ts = Duration::from_secs(u64::from(p.ts_sec)) + Duration::from_nanos(nanos);
            builder.frame(link, ts, &p.data);
        }
    } else if magic == PCAPNG_MAGIC {
        let mut r = PcapNgReader::new(bytes)?;
        // Link type of each interface of the current section.
        let mut interfaces: Vec<u32> = Vec::new();
        while let Some(block) = r.next_block() {
            let (interface, ts, data) = match block? {
                Block::SectionHeader(_) => {
                    interfaces.clear();
                    continue;
                }
                Block::InterfaceDescription(i) => {
                    interfaces.push(u32::from(i.linktype));
                    continue;
                }
                Block::EnhancedPacket(p) => (p.interface_id, p.timestamp, p.data),
                Block::SimplePacket(p) => (0, Duration::ZERO, p.data),
                Block::Packet(p) => (u32::from(p.interface_id), Duration::ZERO, p.data),
                _ => continue,
            };
            let raw_link = *interfaces
                .get(interface as usize)
                .ok_or(Error::Pcap(pcap_file::PcapError::InvalidInterfaceId(interface)))?;
            let link = LinkType::from_linktype(raw_link).ok_or(Error::UnsupportedLinkType(raw_link))?;
            builder.link.get_or_insert(link);
            builder.frame(link, ts, &data);
        }
    } else {
        return Err(Error::NotPcap);
    }
    Ok(Capture {
        link: builder.link.unwrap_or(LinkType::Ethernet),
        frames: builder.frames,
        non_tcp_frames: builder.non_tcp,
        timestamps: builder.timestamps,
        connections: builder.reassembler.finish(),
    })
}

#[derive(Default)]
struct Builder {
    link: Option<LinkType>,
    frames: u64,
    non_tcp: u64,
    timestamps: Vec<Duration>,
    reassembler: Reassembler,
}

impl Builder {
    fn frame(&mut self, link: LinkType, ts: Duration, data: &[u8]) {
        self.frames += 1;
        self.timestamps.push(ts);
        match decode(link, data) {
            Ok(seg) => self.reassembler.push(self.frames, &seg),
            Err(_) => self.non_tcp += 1,
        }
    }
}
