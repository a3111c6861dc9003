//! iwdump run on the siw captures and on crafted ones: what it prints and its exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iwarp_pcap::{Conversation, ConversationOptions, Direction};
use iwarp_wire::mpa::{EnhancedParams, FrameKind, FrameRepr, Framer};
use iwarp_wire::rdmap::ReadRequest;
use iwarp_wire::{Msn, Opcode, SegmentHeader, Stag, TaggedOffset};
use serde_json::Value;

fn siw(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/captures/siw").join(name)
}

fn iwdump(args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iwdump")).args(args).args(files).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The FPDU lines of the text output: (frame, dir, opcode, rest of the line).
fn fpdu_lines(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let frame_like = w.first()?.chars().all(|c| c.is_ascii_digit() || c == '-');
            (frame_like && w.len() > 3 && (w[1] == "c>s" || w[1] == "s>c"))
                .then(|| (w[0].to_string(), w[1].to_string(), w[2].to_string(), w[3..].join(" ")))
        })
        .collect()
}

#[test]
fn rping_capture_in_text() {
    let o = iwdump(&[], &[&siw("rping-v2-crc.pcap")]);
    assert!(o.status.success());
    let t = stdout(&o);
    assert!(t.contains("rping-v2-crc.pcap: 34 frames, 1 TCP connection\n"), "{t}");
    assert!(t.contains("connection 1: client 10.0.2.15:49531 -> server 10.0.2.15:7174, frames 1-34"));
    assert!(t.contains("MPA Request frame 4     c>s rev 2 flags C,S, IRD 1 ORD 1 client/server, no private data"));
    assert!(t.contains(
        "MPA Reply   frame 6     s>c rev 2 flags C,S, IRD 1 ORD 1 client/server, no private data -- accepted"
    ));
    assert!(t.contains("full operation: CRC on, markers c>s off s>c off"));
    let lines = fpdu_lines(&t);
    assert_eq!(lines.len(), 21);
    let count = |op: &str| lines.iter().filter(|l| l.2 == op).count();
    assert_eq!((count("Send"), count("ReadRequest"), count("ReadResponse"), count("Write")), (12, 3, 3, 3));
    assert!(lines.iter().all(|l| l.3.contains(" good ")), "{lines:?}");
    // Frame 8, as tshark shows it: CRC 0x826e4093.
    assert_eq!(lines[0], ("8".into(), "c>s".into(), "Send".into(), "L qn 0 msn 1 mo 0 16 good 826e4093".into()));
    assert_eq!(lines[1].3, "L qn 1 msn 1 mo 0 28 good cc8ab935");
    assert_eq!(lines[5].3, "L stag 0xd7152e00 to 0x0000563b39a46550 64 good 7e0a9fe4");
    assert_eq!(
        t.matches(
            "read 64 bytes from stag 0x5b417000 to 0x0000563b39a46370 into stag 0x99986300 to 0x00005556b734c550"
        )
        .count(),
        3
    );
    assert!(t.contains("c>s closed (FIN) in frame 32; s>c closed (FIN) in frame 33"));
}

#[test]
fn rping_capture_summary() {
    let o = iwdump(&["--summary"], &[&siw("rping-v2-crc.pcap")]);
    assert!(o.status.success());
    let t = stdout(&o);
    let rows: Vec<String> = t
        .lines()
        .filter(|l| l.starts_with("  c>s") || l.starts_with("  s>c"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        [
            "c>s ReadResponse 3 3 192",
            "c>s Send 6 6 96",
            "s>c ReadRequest 3 3 84",
            "s>c Send 6 6 96",
            "s>c Write 3 3 192",
        ]
    );
    assert!(t.contains("21 FPDUs; CRC: 21 good, 0 bad, 0 not checked"));
}

#[test]
fn rping_capture_as_json() {
    let o = iwdump(&["--json"], &[&siw("rping-v2-crc.pcap")]);
    assert!(o.status.success());
    let records: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |t: &str| records.iter().filter(|r| r["type"] == t).collect::<Vec<_>>();
    assert_eq!(of("connection").len(), 1);
    assert_eq!(of("connection")[0]["crc"], true);
    let mpa = of("mpa");
    assert_eq!(mpa.len(), 2);
    assert_eq!(
        (mpa[0]["kind"].as_str(), mpa[0]["ird"].as_u64(), mpa[0]["ord"].as_u64()),
        (Some("request"), Some(1), Some(1))
    );
    let fpdus = of("fpdu");
    assert_eq!(fpdus.len(), 21);
    assert!(of("problem").is_empty());
    assert!(fpdus.iter().all(|f| f["crc"] == "good"));
    let rr = fpdus.iter().find(|f| f["frame"] == 9).unwrap();
    assert_eq!(rr["opcode"], "ReadRequest");
    assert_eq!((rr["qn"].as_u64(), rr["msn"].as_u64()), (Some(1), Some(1)));
    assert_eq!(rr["body"]["kind"], "read_request");
    assert_eq!(rr["body"]["size"], 64);
    assert_eq!(rr["body"]["sink_stag"], "0x99986300");
    assert_eq!(rr["body"]["src_stag"], "0x5b417000");
    // MSNs of the client's Sends count from 1.
    let msns: Vec<u64> = fpdus
        .iter()
        .filter(|f| f["dir"] == "c>s" && f["opcode"] == "Send")
        .map(|f| f["msn"].as_u64().unwrap())
        .collect();
    assert_eq!(msns, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn bad_crc_and_siw_terminate() {
    let o = iwdump(&[], &[&siw("host-probe-bad-crc-terminate.pcap")]);
    assert_eq!(o.status.code(), Some(1), "a bad CRC fails the run");
    let t = stdout(&o);
    let lines = fpdu_lines(&t);
    assert_eq!(lines[0].3, "L stag 0x00000000 to 0x0000000000000000 0 BAD 5cfa8d54 (expected a30572ab)");
    assert_eq!(lines[1].2, "Terminate");
    assert!(t.contains(
        "terminate (Linux siw bit layout): MPA: CRC error (layer 2, etype 0, code 0x02); \
         read per RFC 5040: RDMAP remote operation: unassigned code (layer 0, etype 2, code 0x02)"
    ));
    assert!(t.contains("connection 2: client 10.0.2.2:47708 -> server 10.0.2.15:7177"));
    assert!(t.contains("  no MPA Reply"));
    let j = iwdump(&["--json"], &[&siw("host-probe-bad-crc-terminate.pcap")]);
    assert_eq!(j.status.code(), Some(1));
    let bad: Value = serde_json::from_str(stdout(&j).lines().find(|l| l.contains("\"crc\":\"bad\"")).unwrap()).unwrap();
    assert_eq!((bad["crc_wire"].as_str(), bad["crc_expected"].as_str()), (Some("5cfa8d54"), Some("a30572ab")));
}

#[test]
fn crc_off_and_mpa_negotiations() {
    let o = iwdump(&["--summary"], &[&siw("rping-v2-nocrc.pcap")]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("21 FPDUs; CRC: 0 good, 0 bad, 21 not checked"));
    let o = iwdump(&[], &[&siw("host-probe-mpa.pcap")]);
    assert!(o.status.success());
    let t = stdout(&o);
    assert!(t.contains("rev 2 flags S, IRD 8 ORD 8 client/server"));
    assert!(t.contains("MPA Request frame 14    c>s rev 1 flags -, no private data"));
    assert!(t.contains("rev 2 flags M,S, IRD 1 ORD 1 client/server"));
    assert!(t.contains("rev 2 flags R,S, IRD 0 ORD 0 client/server, no private data -- REJECTED"));
    assert!(t.contains("IRD 1 ORD 1 peer-to-peer RTR Read"));
    assert!(t.contains("IRD 1 ORD 1 peer-to-peer RTR Write"));
}

#[test]
fn all_siw_captures_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/captures/siw");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    let (bad, good): (Vec<&PathBuf>, Vec<&PathBuf>) =
        files.iter().partition(|p| p.ends_with("host-probe-bad-crc-terminate.pcap"));
    let good: Vec<&Path> = good.iter().map(|p| p.as_path()).collect();
    let o = iwdump(&["--json"], &good);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fpdus: Vec<&Value> = records.iter().filter(|r| r["type"] == "fpdu").collect();
    assert!(fpdus.len() > 300);
    assert!(fpdus.iter().all(|f| f["crc"] == "good" || f["crc"] == "off"));
    assert!(fpdus.iter().all(|f| f.get("error").is_none()));
    assert!(records.iter().all(|r| r["type"] != "problem"), "no problems in siw captures");
    let o = iwdump(&[], &[bad[0].as_path(), good[0]]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).matches(" TCP connection").count(), 2, "every file is printed");
}

#[test]
fn unreadable_file_is_exit_2_after_the_others() {
    let missing = Path::new("/nonexistent/capture.pcap");
    let o = iwdump(&[], &[missing, &siw("rping-v1-crc.pcap")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/capture.pcap"));
    assert!(stdout(&o).contains("rping-v1-crc.pcap: "));
    assert!(!iwdump(&[], &[]).status.success(), "a file is required");
}

/// Writes a crafted conversation to a temporary pcap.
fn crafted(name: &str, script: &[(Direction, Vec<u8>)]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("iwdump-{name}-{}.pcap", std::process::id()));
    let opts = ConversationOptions { max_segment: 9000, ..Default::default() };
    Conversation::build(&opts, script).unwrap().write(std::fs::File::create(&path).unwrap()).unwrap();
    path
}

fn handshake(crc: bool, markers: bool) -> Vec<(Direction, Vec<u8>)> {
    let req =
        FrameRepr { markers, crc, ..FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(2, 2), b"") };
    let rep = FrameRepr { kind: FrameKind::Reply, ..req };
    vec![(Direction::ClientToServer, req.to_vec().unwrap()), (Direction::ServerToClient, rep.to_vec().unwrap())]
}

fn framed(f: &mut Framer, h: SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let (b, n) = h.to_bytes();
    let mut out = Vec::new();
    f.frame_to_vec(&b[..n], &[payload], &mut out).unwrap();
    out
}

#[test]
fn malformed_frames_are_reported_and_fail_the_run() {
    let mut script = handshake(true, false);
    let mut c = Framer::new(true, false);
    // A Read Request whose body is too short, then a header with DDP version 2, then an FPDU
    // whose length cannot hold its DDP header (the stream is lost after it).
    script.push((
        Direction::ClientToServer,
        framed(&mut c, SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), &[0; 20]),
    ));
    let mut bad_version = framed(&mut c, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"x");
    bad_version[2] = 0x42;
    // Keep the CRC right so only the header is wrong.
    let n = bad_version.len();
    let crc = iwarp_wire::crc::crc32c(&bad_version[..n - 4]);
    bad_version[n - 4..].copy_from_slice(&iwarp_wire::crc::to_wire(crc));
    script.push((Direction::ClientToServer, bad_version));
    script.push((Direction::ClientToServer, vec![0x00, 0x04, 0x41, 0x43, 0, 0, 0, 0]));
    let path = crafted("malformed", &script);
    let o = iwdump(&[], &[&path]);
    let t = stdout(&o);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("MALFORMED body: RDMA Read Request body of 20 bytes has the wrong length"), "{t}");
    assert!(t.contains("MALFORMED"), "{t}");
    assert!(t.contains("DDP version 2 (expected 1)"), "{t}");
    assert!(t.contains("malformed FPDU at stream byte"), "{t}");
    assert!(t.contains("ULPDU length 4 is shorter than its 18-byte DDP header"), "{t}");
}

#[test]
fn markers_are_removed_and_crcs_checked() {
    let mut script = handshake(true, true);
    let (mut c, mut s) = (Framer::new(true, true), Framer::new(true, true));
    script.push((
        Direction::ClientToServer,
        framed(&mut c, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"hi"),
    ));
    for i in 0..3u64 {
        let h = SegmentHeader::tagged(Opcode::Write, i == 2, Stag(0x100), TaggedOffset(i * 1500));
        script.push((Direction::ClientToServer, framed(&mut c, h, &[7; 1500])));
    }
    let rr = ReadRequest {
        sink_stag: Stag(0x200),
        sink_to: TaggedOffset(0),
        size: 700,
        src_stag: Stag(0x100),
        src_to: TaggedOffset(0),
    };
    script.push((
        Direction::ClientToServer,
        framed(&mut c, SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), &rr.to_bytes()),
    ));
    script.push((
        Direction::ServerToClient,
        framed(&mut s, SegmentHeader::tagged(Opcode::ReadResponse, true, Stag(0x200), TaggedOffset(0)), &[1; 700]),
    ));
    let path = crafted("markers", &script);
    let o = iwdump(&[], &[&path]);
    let t = stdout(&o);
    std::fs::remove_file(&path).unwrap();
    assert!(o.status.success(), "{t}");
    assert!(t.contains("full operation: CRC on, markers c>s on s>c on"));
    let lines = fpdu_lines(&t);
    assert_eq!(lines.len(), 6, "{t}");
    assert!(lines.iter().all(|l| l.3.contains(" good ")), "{t}");
    assert!(lines[1].3.starts_with("- stag 0x00000100 to 0x0000000000000000 1500"), "{t}");
    assert!(t.contains("read 700 bytes from stag 0x00000100"));
}

#[test]
fn other_tcp_and_truncated_captures() {
    let mut script = vec![
        (Direction::ClientToServer, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (Direction::ServerToClient, b"HTTP/1.1 200 OK\r\n".to_vec()),
    ];
    let path = crafted("http", &script);
    let o = iwdump(&[], &[&path]);
    std::fs::remove_file(&path).unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("not iWARP: no MPA Request at the start of the client's stream (18 / 17 bytes)"));

    // A capture that stops inside an FPDU is noted, not an error.
    script = handshake(false, false);
    let mut c = Framer::new(false, false);
    let mut send = framed(&mut c, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[5; 100]);
    send.truncate(60);
    script.push((Direction::ClientToServer, send));
    let path = crafted("cut", &script);
    let o = iwdump(&[], &[&path]);
    std::fs::remove_file(&path).unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("the capture ends inside an FPDU (started at stream byte 24)"), "{}", stdout(&o));
}

#[test]
fn frames_cut_by_a_snap_length_are_decoded_without_crc() {
    let mut script = handshake(true, false);
    let mut c = Framer::new(true, false);
    script.push((
        Direction::ClientToServer,
        framed(&mut c, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"hi"),
    ));
    for i in 0..2u64 {
        let h = SegmentHeader::tagged(Opcode::Write, true, Stag(0x100), TaggedOffset(i * 4096));
        script.push((Direction::ClientToServer, framed(&mut c, h, &[9; 4096])));
    }
    let conv = Conversation::build(&ConversationOptions { max_segment: 9000, ..Default::default() }, &script).unwrap();
    let frames: Vec<iwarp_pcap::Frame> = conv
        .frames
        .iter()
        .map(|f| iwarp_pcap::Frame { data: f.data[..f.data.len().min(128)].to_vec(), ..f.clone() })
        .collect();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("iwdump-snap-{}.pcap", std::process::id()));
    iwarp_pcap::write_frames(std::fs::File::create(&path).unwrap(), iwarp_pcap::LinkType::Ethernet, &frames).unwrap();
    let o = iwdump(&[], &[&path]);
    std::fs::remove_file(&path).unwrap();
    let t = stdout(&o);
    assert!(o.status.success(), "{t}");
    let lines = fpdu_lines(&t);
    assert_eq!(lines.len(), 3, "{t}");
    assert!(lines[0].3.contains(" good "), "{t}");
    assert_eq!(lines[1].3, "L stag 0x00000100 to 0x0000000000000000 4096 not captured");
    assert_eq!(lines[2].3, "L stag 0x00000100 to 0x0000000000001000 4096 not captured");
    assert!(t.contains("8084 bytes in 2 runs were not captured (snap length)"), "{t}");
}

#[test]
fn json_names_the_trailer_frame_and_the_closing_frames() {
    // Two Sends: the first whole in one segment, the second with its CRC trailer cut in two
    // (the last 2 bytes in a segment of their own), then FIN both ways.
    let mut script = handshake(true, false);
    let mut c = Framer::new(true, false);
    script.push((
        Direction::ClientToServer,
        framed(&mut c, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"one"),
    ));
    let second = framed(&mut c, SegmentHeader::untagged(Opcode::Send, true, Msn(2), 0), b"two");
    let n = second.len();
    script.push((Direction::ClientToServer, second[..n - 2].to_vec()));
    script.push((Direction::ClientToServer, second[n - 2..].to_vec()));
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("iwdump-split-{}.pcap", std::process::id()));
    let opts = ConversationOptions { max_segment: 9000, close: true, ..Default::default() };
    let entries = iwarp_pcap::write_conversation(std::fs::File::create(&path).unwrap(), &opts, &script).unwrap();
    let o = iwdump(&["--json"], &[&path]);
    std::fs::remove_file(&path).unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    let records: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fpdus: Vec<&Value> = records.iter().filter(|r| r["type"] == "fpdu").collect();
    assert_eq!(fpdus.len(), 2);
    // Each FPDU: 2 + 18 (untagged header) + 3 = 23 bytes, one byte of pad, so a 5-byte trailer.
    // Whole FPDU: the trailer lies in the FPDU's only frame.
    let (first, _) = entries[2].unwrap();
    assert_eq!((fpdus[0]["frame"].as_u64(), fpdus[0]["trailer_frame"].as_u64()), (Some(first), Some(first)));
    assert_eq!((fpdus[0]["last_frame"].as_u64(), fpdus[0]["trailer_head"].as_u64()), (Some(first), Some(5)));
    // Split trailer: pad and two CRC bytes in the first piece's frame, two in the next one.
    let (head, _) = entries[3].unwrap();
    let (tail, _) = entries[4].unwrap();
    assert_ne!(head, tail);
    assert_eq!((fpdus[1]["trailer_frame"].as_u64(), fpdus[1]["trailer_head"].as_u64()), (Some(head), Some(3)));
    assert_eq!(fpdus[1]["last_frame"].as_u64(), Some(tail));
    assert_eq!(fpdus[1]["crc"], "good");
    let conn = records.iter().find(|r| r["type"] == "connection").unwrap();
    assert!(conn["fin_c2s"].as_u64().is_some_and(|f| f > tail), "{conn}");
    assert!(conn["fin_s2c"].as_u64().is_some(), "{conn}");
    assert!(conn.get("rst_c2s").is_none() && conn.get("rst_s2c").is_none(), "{conn}");
}
