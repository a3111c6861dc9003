//! Writing a scripted TCP conversation as a pcap: handshake, data segments with consistent
//! sequence and acknowledgment numbers, and an orderly close.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::packet::{LinkType, TcpFlags};
use crate::reassembly::Direction;
use crate::Error;

/// The largest TCP payload one IPv4 packet holds (65535 minus 20 bytes of IP and 20 of TCP).
pub const MAX_SEGMENT: usize = 65_495;
/// Snap length written in the file header: large enough for any frame this module builds.
const SNAPLEN: u32 = 262_144;

/// How to write a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationOptions {
    /// The side that sends the SYN.
    pub client: SocketAddr,
    /// The side that answers.
    pub server: SocketAddr,
    /// Link-layer header of every frame (Ethernet, Linux SLL v1/v2, raw IP or BSD loopback).
    pub link: LinkType,
    /// Largest TCP payload per segment; longer script entries are split.
    pub max_segment: usize,
    /// The client's initial sequence number.
    pub client_isn: u32,
    /// The server's initial sequence number.
    pub server_isn: u32,
    /// End with FIN, FIN and ACK.
    pub close: bool,
    /// Timestamp of the first frame; each following frame is 100 µs later.
    pub start: Duration,
}

impl Default for ConversationOptions {
    fn default() -> Self {
        ConversationOptions {
            client: SocketAddr::from(([127, 0, 0, 1], 49_152)),
            server: SocketAddr::from(([127, 0, 0, 1], 7174)),
            link: LinkType::Ethernet,
            max_segment: 1460,
            client_isn: 0x1000_0000,
            server_isn: 0x2000_0000,
            close: true,
            start: Duration::from_secs(1_700_000_000),
        }
    }
}

/// One frame to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture timestamp.
    pub timestamp: Duration,
    /// The frame, link-layer header first.
    pub data: Vec<u8>,
}

/// The frames of a conversation, and where each script entry went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The link type of the frames.
    pub link: LinkType,
    /// Every frame, in order.
    pub frames: Vec<Frame>,
    /// For each script entry, the frame numbers (1-based) of its first and last segment; an
    /// empty entry gets `None`.
    pub entries: Vec<Option<(u64, u64)>>,
}

impl Conversation {
    /// Builds the frames of `script`, a list of (sender, bytes) in the order they are sent.
    ///
    /// # Errors
    /// [`Error::MixedAddressFamilies`] if client and server differ in family,
    /// [`Error::SegmentSize`] if `max_segment` is 0 or above [`MAX_SEGMENT`], and
    /// [`Error::UnsupportedLinkType`] for a link type this module does not write (`Loop`,
    /// `Ipv4`, `Ipv6`).
    pub fn build<B: AsRef<[u8]>>(opts: &ConversationOptions, script: &[(Direction, B)]) -> Result<Self, Error> {
        if opts.client.is_ipv4() != opts.server.is_ipv4() {
            return Err(Error::MixedAddressFamilies);
        }
        if opts.max_segment == 0 || opts.max_segment > MAX_SEGMENT {
            return Err(Error::SegmentSize(opts.max_segment));
        }
        if matches!(opts.link, LinkType::Loop | LinkType::Ipv4 | LinkType::Ipv6) {
            return Err(Error::UnsupportedLinkType(opts.link.linktype()));
        }
        let mut b = Builder {
            opts: *opts,
            frames: Vec::new(),
            // Next sequence number each side sends: client, server.
            next: [opts.client_isn, opts.server_isn],
            ip_id: 1,
        };
        const SYN: u8 = TcpFlags::SYN;
        const ACK: u8 = TcpFlags::ACK;
        const PSH: u8 = TcpFlags::PSH;
        const FIN: u8 = TcpFlags::FIN;
        b.segment(Direction::ClientToServer, SYN, &[]);
        b.segment(Direction::ServerToClient, SYN | ACK, &[]);
        b.segment(Direction::ClientToServer, ACK, &[]);
        let mut entries = Vec::with_capacity(script.len());
        for (dir, bytes) in script {
            let bytes = bytes.as_ref();
            let first = b.frames.len() as u64 + 1;
            for chunk in bytes.chunks(opts.max_segment) {
                b.segment(*dir, PSH | ACK, chunk);
            }
            entries.push((!bytes.is_empty()).then_some((first, b.frames.len() as u64)));
        }
        if opts.close {
            b.segment(Direction::ClientToServer, FIN | ACK, &[]);
            b.segment(Direction::ServerToClient, FIN | ACK, &[]);
            b.segment(Direction::ClientToServer, ACK, &[]);
        }
        Ok(Conversation { link: opts.link, frames: b.frames, entries })
    }

    /// Writes the frames as a pcap file (microsecond timestamps, little-endian).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Pcap`] from the writer.
    pub fn write<W: Write>(&self, out: W) -> Result<(), Error> {
        write_frames(out, self.link, &self.frames)
    }
}

/// Writes `frames` of link type `link` as a pcap file.
///
/// # Errors
/// [`Error::Io`] or [`Error::Pcap`] from the writer.
pub fn write_frames<W: Write>(out: W, link: LinkType, frames: &[Frame]) -> Result<(), Error> {
    let header = PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::from(link.linktype()),
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(out, header)?;
    for f in frames {
        w.write_packet(&PcapPacket::new(f.timestamp, f.data.len() as u32, &f.data))?;
    }
    w.into_writer().flush()?;
    Ok(())
}

/// Builds the conversation of `script` and writes it as a pcap file; returns where each script
/// entry went (see [`Conversation::entries`]).
///
/// # Errors
/// As [`Conversation::build`] and [`Conversation::write`].
pub fn write_conversation<W: Write, B: AsRef<[u8]>>(
    out: W,
    opts: &ConversationOptions,
    script: &[(Direction, B)],
) -> Result<Vec<Option<(u64, u64)>>, Error> {
    let c = Conversation::build(opts, script)?;
    c.write(out)?;
    Ok(c.entries)
}

struct Builder {
    opts: ConversationOptions,
    frames: Vec<Frame>,
    next: [u32; 2],
    ip_id: u16,
}

impl Builder {
    fn segment(&mut self, dir: Direction, flags: u8, payload: &[u8]) {
        let (me, peer) = match dir {
            Direction::ClientToServer => (0, 1),
            Direction::ServerToClient => (1, 0),
        };
        let (src, dst) = match dir {
            Direction::ClientToServer => (self.opts.client, self.opts.server),
            Direction::ServerToClient => (self.opts.server, self.opts.client),
        };
        let seq = self.next[me];
        let ack = if flags & TcpFlags::ACK != 0 { self.next[peer] } else { 0 };
        let mut consumed = payload.len() as u32;
        if flags & (TcpFlags::SYN | TcpFlags::FIN) != 0 {
            consumed += 1;
        }
        self.next[me] = seq.wrapping_add(consumed);

        let mut tcp = Vec::with_capacity(20 + payload.len());
        tcp.extend_from_slice(&src.port().to_be_bytes());
        tcp.extend_from_slice(&dst.port().to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.extend_from_slice(&[0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        let sum = tcp_checksum(src.ip(), dst.ip(), &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());

        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = (20 + tcp.len()) as u16;
                let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let c = !fold(sum_words(&h, 0));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h.extend_from_slice(&tcp);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0x60, 0, 0, 0];
                h.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                h.extend_from_slice(&[6, 64]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&tcp);
                h
            }
            // Checked in `build`.
            _ => unreachable!("address families checked when the conversation was built"),
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        let ethertype: u16 = if src.is_ipv4() { 0x0800 } else { 0x86DD };
        let mut frame = Vec::with_capacity(ip.len() + 20);
        match self.opts.link {
            LinkType::Ethernet => {
                let mac = |i: usize| [0x02, 0, 0, 0, 0, i as u8 + 1];
                frame.extend_from_slice(&mac(peer));
                frame.extend_from_slice(&mac(me));
                frame.extend_from_slice(&ethertype.to_be_bytes());
            }
            LinkType::LinuxSll => {
                // Packet type "sent to us", ARPHRD_LOOPBACK, an empty 6-byte address.
                frame.extend_from_slice(&[0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
                frame.extend_from_slice(&ethertype.to_be_bytes());
            }
            LinkType::LinuxSll2 => {
                frame.extend_from_slice(&ethertype.to_be_bytes());
                frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            LinkType::Null => {
                // AF_INET 2 and Linux's AF_INET6 10, little-endian as written by most hosts.
                let af: u32 = if src.is_ipv4() { 2 } else { 10 };
                frame.extend_from_slice(&af.to_le_bytes());
            }
            LinkType::Raw | LinkType::Loop | LinkType::Ipv4 | LinkType::Ipv6 => {}
        }
        frame.extend_from_slice(&ip);
        let timestamp = self.opts.start + Duration::from_micros(100 * self.frames.len() as u64);
        self.frames.push(Frame { timestamp, data: frame });
    }
}

fn sum_words(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The TCP checksum over the IPv4 or IPv6 pseudo-header and `tcp` (checksum field zero).
fn tcp_checksum(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        }
        _ => {
            let octets = |a: IpAddr| match a {
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
                IpAddr::V6(v) => v.octets(),
            };
            pseudo.extend_from_slice(&octets(src));
            pseudo.extend_from_slice(&octets(dst));
            pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        }
    }
    !fold(sum_words(tcp, sum_words(&pseudo, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::decode;

    #[test]
    fn handshake_data_and_close_have_consistent_numbers() {
        let opts = ConversationOptions { max_segment: 4, ..Default::default() };
        let script = [(Direction::ClientToServer, b"hello".to_vec()), (Direction::ServerToClient, b"ok".to_vec())];
        let c = Conversation::build(&opts, &script).unwrap();
        assert_eq!(c.entries, vec![Some((4, 5)), Some((6, 6))]);
        let segs: Vec<_> = c.frames.iter().map(|f| decode(LinkType::Ethernet, &f.data).unwrap()).collect();
        assert_eq!(segs.len(), 9);
        let (cisn, sisn) = (opts.client_isn, opts.server_isn);
        assert_eq!((segs[0].seq, segs[0].flags.0), (cisn, TcpFlags::SYN));
        assert_eq!((segs[1].seq, segs[1].ack, segs[1].flags.0), (sisn, cisn + 1, TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!((segs[2].seq, segs[2].ack), (cisn + 1, sisn + 1));
        assert_eq!((segs[3].seq, segs[3].payload), (cisn + 1, &b"hell"[..]));
        assert_eq!((segs[4].seq, segs[4].payload), (cisn + 5, &b"o"[..]));
        assert_eq!((segs[5].seq, segs[5].ack, segs[5].payload), (sisn + 1, cisn + 6, &b"ok"[..]));
        assert!(segs[6].flags.fin() && segs[6].seq == cisn + 6);
        assert!(segs[7].flags.fin() && segs[7].seq == sisn + 3 && segs[7].ack == cisn + 7);
        assert_eq!((segs[8].seq, segs[8].ack), (cisn + 7, sisn + 4));
        assert!(c.frames.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    }

    #[test]
    fn checksums_verify() {
        let c = Conversation::build(&ConversationOptions::default(), &[(Direction::ClientToServer, b"abc")]).unwrap();
        let f = &c.frames[3].data;
        // Summing a header including its checksum gives 0xFFFF.
        assert_eq!(fold(sum_words(&f[14..34], 0)), 0xFFFF);
        let tcp = &f[34..];
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
        assert_eq!(fold(sum_words(tcp, sum_words(&pseudo, 0))), 0xFFFF);
    }

    #[test]
    fn bad_options_are_refused() {
        let script: [(Direction, &[u8]); 0] = [];
        let v6 = ConversationOptions { server: "[::1]:1".parse().unwrap(), ..Default::default() };
        assert!(matches!(Conversation::build(&v6, &script), Err(Error::MixedAddressFamilies)));
        let zero = ConversationOptions { max_segment: 0, ..Default::default() };
        assert!(matches!(Conversation::build(&zero, &script), Err(Error::SegmentSize(0))));
        let big = ConversationOptions { max_segment: MAX_SEGMENT + 1, ..Default::default() };
        assert!(matches!(Conversation::build(&big, &script), Err(Error::SegmentSize(_))));
        let lp = ConversationOptions { link: LinkType::Loop, ..Default::default() };
        assert!(matches!(Conversation::build(&lp, &script), Err(Error::UnsupportedLinkType(108))));
    }
}
