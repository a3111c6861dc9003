//! FPDUs aligned to TCP segments (RFC 5044 §4, "FPDU Alignment"), proved in a capture. At MTU
//! 1500 with segment-sized FPDUs (what Linux siw and hardware peers get), segmentation offload
//! off so that the kernel cuts every segment itself, a capture on the client's veth must show
//! every segment of both directions starting and ending on an FPDU boundary, over a verified
//! stream of Writes, Sends and Reads of mixed sizes, but where TCP itself cuts elsewhere: at the
//! edge of the peer's receive window while it opens (the first MiB), and in segments that SACK
//! options shortened (docs/deviations.md, "FPDUs aligned to TCP segments"). With alignment off (`mpa=unaligned`),
//! the same traffic is not aligned: the check tells the two apart. Needs root, `ip netns`,
//! `ethtool` and `tcpdump`.

mod common;

use common::*;
use iwarp_faults::Side;
use iwarp_pcap::Stream;
use iwarp_wire::mpa::fpdu_len;
use std::time::Duration;

/// Stream bytes (from the start of the FPDUs) within which TCP may still cut a segment at the
/// edge of the peer's first receive window, which is not a multiple of the MSS.
const STARTUP: u64 = 1 << 20;

/// The MSS at MTU 1500 with timestamps (1500 − 20 − 20 − 12).
const MSS: usize = 1448;

/// What the capture of one direction shows.
#[derive(Debug, Default)]
struct Alignment {
    /// Segments after the MPA frame.
    segments: usize,
    /// Of those, segments that start or end inside an FPDU.
    misaligned: usize,
    /// Misaligned segments past the first [`STARTUP`] bytes of FPDUs, but for runs SACK
    /// options explain.
    late: usize,
    /// Runs of misaligned segments (each begins with a segment cut short on an FPDU boundary).
    episodes: usize,
    /// Of those, runs that begin with a segment shortened by SACK options (reverse loss).
    sack_episodes: usize,
    /// FPDUs walked.
    fpdus: usize,
}

/// Walks one direction: its MPA Request or Reply, then FPDUs (CRC on, no markers), and checks
/// each captured segment against the FPDU boundaries.
fn alignment(s: &Stream) -> Alignment {
    let data = s.data();
    let mut a = Alignment::default();
    if data.len() < 20 || !data.starts_with(b"MPA ID Re") {
        return a;
    }
    let mpa_end = 20 + u16::from_be_bytes([data[18], data[19]]) as usize;
    let mut bounds = vec![mpa_end as u64];
    let mut at = mpa_end;
    while at + 2 <= data.len() {
        let ulpdu = u16::from_be_bytes([data[at], data[at + 1]]) as usize;
        at += fpdu_len(ulpdu);
        if at > data.len() {
            break;
        }
        bounds.push(at as u64);
        a.fpdus += 1;
    }
    let end = *bounds.last().unwrap_or(&0);
    let (mut off_grid, mut sack) = (false, false);
    for r in s.runs().iter().filter(|r| r.offset >= mpa_end as u64 && r.offset < end) {
        a.segments += 1;
        let starts = bounds.binary_search(&r.offset).is_ok();
        if starts && bounds.binary_search(&(r.offset + r.len)).is_ok() {
            off_grid = false;
            continue;
        }
        a.misaligned += 1;
        if !off_grid {
            a.episodes += 1;
            // A cut where SACK blocks took room in the header: the segment is the MSS less
            // one to three blocks (12, 20 or 28 bytes of options).
            sack = [12, 20, 28].iter().any(|o| r.len as usize + o == MSS);
            a.sack_episodes += usize::from(sack);
        }
        if r.offset - mpa_end as u64 >= STARTUP && !sack {
            a.late += 1;
        }
        if !off_grid && a.episodes <= 3 {
            eprintln!("  off the grid from stream byte {} (frame {}, {} bytes)", r.offset, r.frame, r.len);
        }
        off_grid = true;
    }
    a
}

/// Runs the verified stream with the server and client MPA option `mode` under a capture;
/// returns the alignment of the client's and the server's direction of the connection.
fn captured_stream(mode: &str) -> Option<(Alignment, Alignment)> {
    let lab = lab(true, 1500)?;
    lab.cut_segments(Side::A).expect("ethtool");
    lab.cut_segments(Side::B).expect("ethtool");
    let pcap = std::env::temp_dir().join(format!("iwf-align-{}-{mode}.pcap", std::process::id()));
    let mut sniffer = lab.sniff(Side::A, &pcap).expect("tcpdump");
    let mpa = format!("mpa={mode}");
    let mut srv = server(&lab, 7100, &[&mpa]);
    let mut cl = client(
        &lab,
        &[7100],
        &["secs=2", "sizes=log", "maxwrite=262144", "slot=262144", "maxsend=16384", "window=8", &mpa],
    );
    let r = result(&cl.finish("result", Duration::from_secs(60)), 0);
    assert_clean(&r);
    let sc = srv.wait_line("server_conn n=1", Duration::from_secs(10)).expect("server report");
    assert_eq!(iwarp_faults::num(&sc, "bad"), Some(0), "{sc}");
    std::thread::sleep(Duration::from_millis(300));
    let said = sniffer.stop();
    let cap = iwarp_pcap::read_file(&pcap).expect("capture");
    let _ = std::fs::remove_file(&pcap);
    eprintln!("{mode}: {r}\n{mode}: tcpdump: {}", said.join("; "));
    let conn = cap
        .connections
        .iter()
        .find(|c| c.handshake_seen() && c.stream(iwarp_pcap::Direction::ClientToServer).data().len() > 1 << 20)
        .expect("the stream's connection in the capture");
    let c2s = alignment(conn.stream(iwarp_pcap::Direction::ClientToServer));
    let s2c = alignment(conn.stream(iwarp_pcap::Direction::ServerToClient));
    eprintln!("{mode}: client->server {c2s:?}; server->client {s2c:?}");
    Some((c2s, s2c))
}

#[test]
fn segment_sized_fpdus_are_aligned_to_segments_both_ways() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((c2s, s2c)) = captured_stream("segment") else { return };
    for (dir, a) in [("client->server", &c2s), ("server->client", &s2c)] {
        assert!(a.fpdus > 1000 && a.segments > 1000, "{dir}: too little traffic to judge: {a:?}");
        // Cuts only in the first MiB (at the edges of the peer's first receive windows), or
        // where SACK options shortened the segments (loss on the other direction).
        assert_eq!(a.late, 0, "{dir}: segments cut inside an FPDU: {a:?}");
    }
}

#[test]
fn without_alignment_the_kernel_cuts_fpdus() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((c2s, s2c)) = captured_stream("unaligned") else { return };
    for (dir, a) in [("client->server", &c2s), ("server->client", &s2c)] {
        assert!(a.segments > 1000, "{dir}: too little traffic to judge: {a:?}");
        assert!(a.late > a.segments / 100, "{dir}: unaligned FPDUs should straddle segments: {a:?}");
    }
}
