//! Decoding one captured frame down to its TCP segment: link layer (Ethernet with VLAN tags, Linux
//! cooked SLL v1 and v2, BSD loopback, raw IP), IPv4 or IPv6, then TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The link-layer header types this crate reads and writes (pcap LINKTYPE values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_NULL (0): BSD loopback, a 4-byte address family in the capturing host's order.
    Null,
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101): an IPv4 or IPv6 header first.
    Raw,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, a 4-byte address family in network order.
    Loop,
    /// LINKTYPE_LINUX_SLL (113): Linux "cooked" header v1, as captured on the `any` device.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux "cooked" header v2.
    LinuxSll2,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
}

impl LinkType {
    /// The link type for a pcap LINKTYPE value, if this crate decodes it.
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        Some(match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            // 12 and 14 are DLT_RAW on some BSDs; pcap files normally carry 101.
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// The pcap LINKTYPE value.
    pub fn linktype(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
        }
    }
}

/// The flags byte of a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;

    /// FIN is set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// SYN is set.
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// RST is set.
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// ACK is set.
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A TCP segment found in a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when the ACK flag is set).
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// The captured payload.
    pub payload: &'a [u8],
    /// Payload bytes the segment carried on the wire, from the IP length: more than
    /// `payload.len()` when the capture's snap length cut the frame short.
    pub wire_len: usize,
}

impl TcpSegment<'_> {
    /// The capture holds only part of the payload.
    pub fn truncated(&self) -> bool {
        self.wire_len > self.payload.len()
    }
}

/// Why a frame carries no usable TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTcp {
    /// The link layer carries something other than IPv4 or IPv6.
    NotIp,
    /// The IP packet carries something other than TCP.
    OtherProtocol(u8),
    /// An IP fragment (not reassembled).
    Fragment,
    /// A header is cut short or inconsistent.
    Malformed,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88A8, 0x9100];
const PROTO_TCP: u8 = 6;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes a captured frame of link type `link` down to its TCP segment.
///
/// # Errors
/// [`NotTcp`] says why the frame has no TCP segment.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<TcpSegment<'_>, NotTcp> {
    let ip = match link {
        LinkType::Ethernet => {
            let mut at = 12;
            let mut ethertype = be16(frame, at).ok_or(NotTcp::Malformed)?;
            while ETHERTYPE_VLAN.contains(&ethertype) {
                at += 4;
                ethertype = be16(frame, at).ok_or(NotTcp::Malformed)?;
            }
            by_ethertype(ethertype, frame.get(at + 2..).ok_or(NotTcp::Malformed)?)?
        }
        LinkType::LinuxSll => by_ethertype(be16(frame, 14).ok_or(NotTcp::Malformed)?, frame.get(16..).unwrap_or(&[]))?,
        LinkType::LinuxSll2 => by_ethertype(be16(frame, 0).ok_or(NotTcp::Malformed)?, frame.get(20..).unwrap_or(&[]))?,
        // The address family's value differs between systems; the IP version nibble does not.
        LinkType::Null | LinkType::Loop => frame.get(4..).ok_or(NotTcp::Malformed)?,
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => frame,
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) => ipv4(ip),
        Some(6) => ipv6(ip),
        Some(_) => Err(NotTcp::NotIp),
        None => Err(NotTcp::Malformed),
    }
}

fn by_ethertype(ethertype: u16, rest: &[u8]) -> Result<&[u8], NotTcp> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(rest),
        _ => Err(NotTcp::NotIp),
    }
}

fn ipv4(p: &[u8]) -> Result<TcpSegment<'_>, NotTcp> {
    let ihl = usize::from(p[0] & 0x0F) * 4;
    if ihl < 20 || p.len() < ihl {
        return Err(NotTcp::Malformed);
    }
    let total = usize::from(be16(p, 2).ok_or(NotTcp::Malformed)?);
    let frag = be16(p, 6).ok_or(NotTcp::Malformed)?;
    // More-fragments flag or a non-zero fragment offset.
    if frag & 0x3FFF != 0 {
        return Err(NotTcp::Fragment);
    }
    if p[9] != PROTO_TCP {
        return Err(NotTcp::OtherProtocol(p[9]));
    }
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    // Total length 0 is what segmentation offload leaves in captures of large sends.
    let (end, wire_end) = if total == 0 {
        (p.len(), p.len())
    } else if total < ihl {
        return Err(NotTcp::Malformed);
    } else {
        // Ethernet pads short frames: trust the IP length, not the frame length.
        (total.min(p.len()), total)
    };
    tcp(src, dst, &p[ihl..end], wire_end - ihl)
}

fn ipv6(p: &[u8]) -> Result<TcpSegment<'_>, NotTcp> {
    if p.len() < 40 {
        return Err(NotTcp::Malformed);
    }
    let payload_len = usize::from(be16(p, 4).ok_or(NotTcp::Malformed)?);
    let mut src = [0u8; 16];
    src.copy_from_slice(&p[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&p[24..40]);
    let (end, wire_end) =
        if payload_len == 0 { (p.len(), p.len()) } else { ((40 + payload_len).min(p.len()), 40 + payload_len) };
    let mut next = p[6];
    let mut at = 40;
    loop {
        match next {
            PROTO_TCP => break,
            // Hop-by-hop, routing, destination options: (length + 1) units of 8 bytes.
            0 | 43 | 60 => {
                let h = p.get(at..at + 2).ok_or(NotTcp::Malformed)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            // Fragment header: only a whole packet (offset 0, no more fragments) goes on.
            44 => {
                let h = p.get(at..at + 8).ok_or(NotTcp::Malformed)?;
                if u16::from_be_bytes([h[2], h[3]]) & 0xFFF9 != 0 {
                    return Err(NotTcp::Fragment);
                }
                next = h[0];
                at += 8;
            }
            // Authentication header: (length + 2) units of 4 bytes.
            51 => {
                let h = p.get(at..at + 2).ok_or(NotTcp::Malformed)?;
                next = h[0];
                at += (usize::from(h[1]) + 2) * 4;
            }
            other => return Err(NotTcp::OtherProtocol(other)),
        }
    }
    if at > end {
        return Err(NotTcp::Malformed);
    }
    tcp(IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)), &p[at..end], wire_end - at)
}

/// `t` is the captured TCP segment, `wire_len` its length on the wire.
fn tcp(src: IpAddr, dst: IpAddr, t: &[u8], wire_len: usize) -> Result<TcpSegment<'_>, NotTcp> {
    if t.len() < 20 {
        return Err(NotTcp::Malformed);
    }
    let data_offset = usize::from(t[12] >> 4) * 4;
    if data_offset < 20 || data_offset > t.len() {
        return Err(NotTcp::Malformed);
    }
    let sport = be16(t, 0).ok_or(NotTcp::Malformed)?;
    let dport = be16(t, 2).ok_or(NotTcp::Malformed)?;
    Ok(TcpSegment {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        seq: be32(t, 4).ok_or(NotTcp::Malformed)?,
        ack: be32(t, 8).ok_or(NotTcp::Malformed)?,
        flags: TcpFlags(t[13]),
        payload: &t[data_offset..],
        wire_len: wire_len.max(t.len()) - data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // An Ethernet/IPv4/TCP frame: 10.0.2.15:7174 -> 10.0.2.15:49531, PSH|ACK, 4 payload bytes.
    fn eth_ipv4() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15, 10, 0, 2, 15]);
        f.extend_from_slice(&[0x1c, 0x06, 0xc1, 0x7b, 0, 0, 0, 100, 0, 0, 0, 200, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(b"abcd");
        f
    }

    #[test]
    fn ethernet_ipv4_tcp_fields() {
        let f = eth_ipv4();
        let s = decode(LinkType::Ethernet, &f).unwrap();
        assert_eq!(s.src, "10.0.2.15:7174".parse().unwrap());
        assert_eq!(s.dst, "10.0.2.15:49531".parse().unwrap());
        assert_eq!((s.seq, s.ack), (100, 200));
        assert!(s.flags.ack() && !s.flags.syn() && !s.flags.fin() && !s.flags.rst());
        assert_eq!(s.payload, b"abcd");
        assert_eq!(s.wire_len, 4);
        assert!(!s.truncated());
    }

    #[test]
    fn ethernet_padding_is_not_payload_and_short_capture_is_truncated() {
        let mut f = eth_ipv4();
        f.extend_from_slice(&[0u8; 6]);
        assert_eq!(decode(LinkType::Ethernet, &f).unwrap().payload, b"abcd");
        let f = eth_ipv4();
        let s = decode(LinkType::Ethernet, &f[..f.len() - 2]).unwrap();
        assert_eq!(s.payload, b"ab");
        assert_eq!(s.wire_len, 4);
        assert!(s.truncated());
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let f = eth_ipv4();
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06]);
        v.extend_from_slice(&f[12..]);
        assert_eq!(decode(LinkType::Ethernet, &v).unwrap().payload, b"abcd");
    }

    #[test]
    fn cooked_loopback_and_raw_headers() {
        let ip = &eth_ipv4()[14..];
        let mut sll = vec![0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(ip);
        assert_eq!(decode(LinkType::LinuxSll, &sll).unwrap().payload, b"abcd");
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        sll2.extend_from_slice(ip);
        assert_eq!(decode(LinkType::LinuxSll2, &sll2).unwrap().payload, b"abcd");
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        assert_eq!(decode(LinkType::Null, &null).unwrap().payload, b"abcd");
        assert_eq!(decode(LinkType::Loop, &null).unwrap().payload, b"abcd");
        assert_eq!(decode(LinkType::Raw, ip).unwrap().payload, b"abcd");
        let mut arp = sll.clone();
        arp[14..16].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(decode(LinkType::LinuxSll, &arp), Err(NotTcp::NotIp));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        // Hop-by-hop (8 bytes) then an atomic fragment header, then TCP.
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 7]);
        p.extend_from_slice(&[0x1c, 0x06, 0xc1, 0x7b, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(b"xy");
        let len = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        let s = decode(LinkType::Raw, &p).unwrap();
        assert_eq!(s.src, "[::1]:7174".parse().unwrap());
        assert!(s.flags.syn());
        assert_eq!(s.payload, b"xy");
        // A real fragment is skipped.
        p[40 + 8 + 3] = 1;
        assert_eq!(decode(LinkType::Ipv6, &p), Err(NotTcp::Fragment));
    }

    #[test]
    fn fragments_other_protocols_and_garbage() {
        let mut f = eth_ipv4();
        f[14 + 6] = 0x20; // more fragments
        assert_eq!(decode(LinkType::Ethernet, &f), Err(NotTcp::Fragment));
        let mut f = eth_ipv4();
        f[14 + 9] = 17;
        assert_eq!(decode(LinkType::Ethernet, &f), Err(NotTcp::OtherProtocol(17)));
        let mut f = eth_ipv4();
        f[14 + 20 + 12] = 0x40; // data offset 16
        assert_eq!(decode(LinkType::Ethernet, &f), Err(NotTcp::Malformed));
        for n in 0..eth_ipv4().len() - 4 {
            assert!(decode(LinkType::Ethernet, &eth_ipv4()[..n]).is_err() || n >= 54, "{n}");
        }
        assert!(decode(LinkType::Raw, &[]).is_err());
        assert!(decode(LinkType::LinuxSll2, &[0x86, 0xdd]).is_err());
    }

    #[test]
    fn linktype_values_round_trip() {
        for l in [
            LinkType::Null,
            LinkType::Ethernet,
            LinkType::Raw,
            LinkType::Loop,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Ipv4,
            LinkType::Ipv6,
        ] {
            assert_eq!(LinkType::from_linktype(l.linktype()), Some(l));
        }
        assert_eq!(LinkType::from_linktype(105), None);
    }
}
