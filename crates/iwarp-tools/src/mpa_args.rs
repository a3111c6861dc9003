//! Command-line options for MPA connection setup, shared by `iwping` and `iwperf`.

use clap::{Args, ValueEnum};
use iwarp::{MpaOptions, RtrTypes};
use std::time::Duration;

/// Which RFC 6581 RTR message to offer in peer-to-peer mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RtrArg {
    /// Zero-length RDMA Write (what Linux siw sends).
    Write,
    /// Zero-length RDMA Read (what Chelsio hardware sends).
    Read,
    /// Zero-length Send.
    Send,
    /// Offer every type.
    Any,
}

/// MPA options (all sides).
#[derive(Debug, Clone, Args)]
pub struct MpaArgs {
    /// MPA revision to initiate with (1 or 2; a server answers both).
    #[arg(long = "mpa-rev", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub mpa_rev: u8,
    /// Do not ask for CRC32c (CRC is still used if the peer asks).
    #[arg(long = "no-crc")]
    pub no_crc: bool,
    /// Ask the peer to insert MPA markers.
    #[arg(long)]
    pub markers: bool,
    /// RFC 6581 peer-to-peer mode with this RTR message.
    #[arg(long, value_enum)]
    pub p2p: Option<RtrArg>,
    /// Do not offer RFC 7306 (atomics, Immediate Data).
    #[arg(long = "no-rfc7306")]
    pub no_rfc7306: bool,
    /// Do not offer FPDUs larger than the TCP MSS (another copy of this stack would accept
    /// them; siw and hardware never do).
    #[arg(long = "no-large-fpdus")]
    pub no_large_fpdus: bool,
    /// Do not align segment-sized FPDUs to TCP segments (hand them to the socket in as few
    /// calls as possible, as before alignment existed; the kernel may then split an FPDU
    /// across two segments).
    #[arg(long = "no-align")]
    pub no_align: bool,
    /// Seconds to wait for the peer's MPA frame.
    #[arg(long = "mpa-timeout", default_value_t = 10)]
    pub mpa_timeout: u64,
}

impl MpaArgs {
    /// The options for the stack.
    pub fn options(&self) -> MpaOptions {
        let p2p = self.p2p.map(|r| match r {
            RtrArg::Write => RtrTypes { write: true, ..RtrTypes::NONE },
            RtrArg::Read => RtrTypes { read: true, ..RtrTypes::NONE },
            RtrArg::Send => RtrTypes { send: true, ..RtrTypes::NONE },
            RtrArg::Any => RtrTypes::ALL,
        });
        MpaOptions {
            revision: self.mpa_rev,
            crc: !self.no_crc,
            markers: self.markers,
            peer_to_peer: p2p,
            rfc7306: !self.no_rfc7306,
            large_fpdus: !self.no_large_fpdus,
            align_fpdus: !self.no_align,
            timeout: Duration::from_secs(self.mpa_timeout),
        }
    }
}
