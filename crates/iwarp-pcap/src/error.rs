//! The error type of reading and writing captures.

/// Why a capture could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The pcap or pcapng structure is malformed.
    #[error("malformed capture file: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    /// The file is neither pcap nor pcapng.
    #[error("not a pcap or pcapng file")]
    NotPcap,
    /// A link-layer type this crate does not decode (the pcap LINKTYPE value).
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
    /// A conversation's two endpoints are of different address families.
    #[error("client and server addresses must both be IPv4 or both IPv6")]
    MixedAddressFamilies,
    /// A segment size that cannot be written (zero, or too large for one IP packet).
    #[error("maximum segment size {0} is out of range")]
    SegmentSize(usize),
}
