//! Our encoder checked by an independent decoder: a conversation built with `FrameRepr`,
//! `Framer`, `SegmentHeader` and the body codecs is written as a pcap and decoded by tshark's
//! iWARP dissectors, which must agree on every field, find every CRC good and raise no expert
//! info beyond the two it raises for every RFC 6581 frame.
//!
//! Where tshark is not installed the tests are skipped with a message, except under CI
//! (`CI` set), which installs tshark and where a missing tshark is a failure.
//! `IWARP_SKIP_TSHARK=1` skips them explicitly, outside CI only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use iwarp_pcap::{Conversation, ConversationOptions, Direction};
use iwarp_wire::mpa::{EnhancedParams, FrameKind, FrameRepr, Framer};
use iwarp_wire::rdmap::{AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::{CopiedDdpHeader, TaggedBuffer, TerminateCause, TerminateRepr};
use iwarp_wire::{Msn, Opcode, Placement, SegmentHeader, Stag, TaggedOffset};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

/// Whether the tshark checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Run,
    /// Skipped, saying why.
    Skip(&'static str),
    /// Failed, saying why.
    Fail(&'static str),
}

/// Under CI (`CI` set) the checks run and a missing tshark fails them, whatever
/// `IWARP_SKIP_TSHARK` says; elsewhere `IWARP_SKIP_TSHARK=1` or a missing tshark skips them.
fn plan(ci: bool, skip_asked: bool, installed: bool) -> Plan {
    if ci {
        // Checked first: nothing set in the environment turns CI's checks off.
        return if installed {
            Plan::Run
        } else {
            Plan::Fail("tshark is not installed, and CI must run these checks (.ci/run installs it)")
        };
    }
    if skip_asked {
        Plan::Skip("IWARP_SKIP_TSHARK=1: tshark checks skipped")
    } else if installed {
        Plan::Run
    } else {
        Plan::Skip("tshark is not installed (Debian: apt-get install tshark): tshark checks skipped")
    }
}

/// Writes a line to the process's stderr itself: the test harness captures `eprintln!` of a
/// passing test, and a skip must show in every run.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The tshark binary, or `None` when the tests are to be skipped (said on stderr).
fn tshark() -> Option<&'static str> {
    let ci = std::env::var_os("CI").is_some();
    let skip_asked = std::env::var("IWARP_SKIP_TSHARK").is_ok_and(|v| v == "1");
    if ci && skip_asked {
        say("CI is set: IWARP_SKIP_TSHARK=1 ignored, the tshark checks run");
    }
    let installed = Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success());
    match plan(ci, skip_asked, installed) {
        Plan::Run => Some("tshark"),
        Plan::Skip(why) => {
            say(why);
            None
        }
        Plan::Fail(why) => panic!("{why}"),
    }
}

#[test]
fn ci_runs_the_tshark_checks_whatever_skip_is_asked() {
    for skip_asked in [false, true] {
        assert_eq!(plan(true, skip_asked, true), Plan::Run);
        assert!(matches!(plan(true, skip_asked, false), Plan::Fail(_)), "skip asked: {skip_asked}");
    }
    assert_eq!(plan(false, false, true), Plan::Run);
    assert_eq!(plan(false, true, true), Plan::Skip("IWARP_SKIP_TSHARK=1: tshark checks skipped"));
    assert!(matches!(plan(false, false, false), Plan::Skip(why) if why.contains("not installed")));
    assert!(matches!(plan(false, true, false), Plan::Skip(why) if why.contains("IWARP_SKIP_TSHARK")));
}

/// What we encoded in one FPDU, for comparison with tshark's fields.
#[derive(Debug, Clone)]
struct Sent {
    dir: Direction,
    header: SegmentHeader,
    ulpdu_len: usize,
    /// The CRC field's four wire bytes.
    crc_wire: [u8; 4],
    read: Option<ReadRequest>,
    atomic_req: Option<AtomicRequest>,
    atomic_resp: Option<AtomicResponse>,
    terminate: Option<(TerminateCause, Vec<u8>, u16)>,
    /// FPDUPTR of each marker in the FPDU's bytes (a leading one included).
    markers: Vec<u16>,
}

/// Builds the conversation: MPA Request and Reply, then FPDUs both ways.
struct Builder {
    script: Vec<(Direction, Vec<u8>)>,
    sent: BTreeMap<usize, Sent>,
    framers: [Framer; 2],
}

impl Builder {
    fn new(crc: bool, markers: bool) -> Self {
        Builder {
            script: Vec::new(),
            sent: BTreeMap::new(),
            framers: [Framer::new(crc, markers), Framer::new(crc, markers)],
        }
    }

    fn raw(&mut self, dir: Direction, bytes: Vec<u8>) {
        self.script.push((dir, bytes));
    }

    fn fpdu(&mut self, dir: Direction, header: SegmentHeader, payload: &[u8]) -> Sent {
        let (hdr, len) = header.to_bytes();
        let mut out = Vec::new();
        let framer = &mut self.framers[usize::from(dir == S2C)];
        let start = framer.stream_offset();
        framer.frame_to_vec(&hdr[..len], &[payload], &mut out).unwrap();
        let markers = if framer.markers_enabled() {
            (start..start + out.len() as u64)
                .filter(|p| p % 512 == 0)
                .map(|p| {
                    let i = (p - start) as usize;
                    u16::from_be_bytes([out[i + 2], out[i + 3]])
                })
                .collect()
        } else {
            Vec::new()
        };
        let crc_wire: [u8; 4] = out[out.len() - 4..].try_into().unwrap();
        let sent = Sent {
            dir,
            header,
            ulpdu_len: len + payload.len(),
            crc_wire,
            read: None,
            atomic_req: None,
            atomic_resp: None,
            terminate: None,
            markers,
        };
        self.sent.insert(self.script.len(), sent.clone());
        self.raw(dir, out);
        sent
    }

    fn annotate(&mut self, f: impl FnOnce(&mut Sent)) {
        let last = self.script.len() - 1;
        f(self.sent.get_mut(&last).unwrap());
    }
}

const WRITE_STAG: Stag = Stag(0x0123_4500);
const WRITE_TO: TaggedOffset = TaggedOffset(0x0000_7f00_0000_1000);
const SINK_STAG: Stag = Stag(0x00ab_cd11);
const SINK_TO: TaggedOffset = TaggedOffset(0x0000_5555_0000_2000);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i % 253) as u8)).collect()
}

fn build(crc: bool, markers: bool) -> Builder {
    let mut b = Builder::new(crc, markers);
    let params = EnhancedParams::client_server(4, 4);
    let req = FrameRepr { markers, crc, ..FrameRepr::enhanced(FrameKind::Request, params, b"iwarp") };
    let rep = FrameRepr { kind: FrameKind::Reply, private_data: b"", ..req };
    b.raw(C2S, req.to_vec().unwrap());
    b.raw(S2C, rep.to_vec().unwrap());

    // The initiator speaks first: a small Send.
    b.fpdu(C2S, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"hello");
    b.fpdu(S2C, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &pattern(40, 1));
    // A small Write, then one in three segments with TO advancing.
    b.fpdu(C2S, SegmentHeader::tagged(Opcode::Write, true, WRITE_STAG, WRITE_TO), &pattern(64, 2));
    let big = pattern(2500, 3);
    let mut to = WRITE_TO.0;
    for (i, part) in big.chunks(1000).enumerate() {
        let last = i == 2;
        b.fpdu(C2S, SegmentHeader::tagged(Opcode::Write, last, WRITE_STAG, TaggedOffset(to)), part);
        to += part.len() as u64;
    }
    // A Read Request and its Read Response in two segments.
    let rr = ReadRequest { sink_stag: SINK_STAG, sink_to: SINK_TO, size: 3000, src_stag: WRITE_STAG, src_to: WRITE_TO };
    b.fpdu(C2S, SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), &rr.to_bytes());
    b.annotate(|s| s.read = Some(rr));
    let data = pattern(3000, 4);
    b.fpdu(S2C, SegmentHeader::tagged(Opcode::ReadResponse, false, SINK_STAG, SINK_TO), &data[..2000]);
    b.fpdu(
        S2C,
        SegmentHeader::tagged(Opcode::ReadResponse, true, SINK_STAG, TaggedOffset(SINK_TO.0 + 2000)),
        &data[2000..],
    );
    // The four Send opcodes; the invalidating ones carry an STag.
    let mut inv = SegmentHeader::untagged(Opcode::SendInvalidate, true, Msn(2), 0);
    inv.inval_stag = WRITE_STAG;
    b.fpdu(C2S, inv, &pattern(12, 5));
    b.fpdu(C2S, SegmentHeader::untagged(Opcode::SendSe, true, Msn(3), 0), &pattern(13, 6));
    let mut se_inv = SegmentHeader::untagged(Opcode::SendSeInvalidate, true, Msn(4), 0);
    se_inv.inval_stag = SINK_STAG;
    b.fpdu(C2S, se_inv, &pattern(14, 7));
    // A Send in two segments: MO advances.
    let long = pattern(1500, 8);
    b.fpdu(S2C, SegmentHeader::untagged(Opcode::Send, false, Msn(2), 0), &long[..1000]);
    b.fpdu(S2C, SegmentHeader::untagged(Opcode::Send, true, Msn(2), 1000), &long[1000..]);
    // Atomics: a fetch-and-add and its response.
    let areq = AtomicRequest::fetch_add(77, WRITE_STAG, TaggedOffset(WRITE_TO.0 + 8), 5);
    b.fpdu(C2S, SegmentHeader::untagged(Opcode::AtomicRequest, true, Msn(2), 0), &areq.to_bytes());
    b.annotate(|s| s.atomic_req = Some(areq));
    let aresp = AtomicResponse { request_id: 77, original: 0x1122_3344_5566_7788 };
    b.fpdu(S2C, SegmentHeader::untagged(Opcode::AtomicResponse, true, Msn(1), 0), &aresp.to_bytes());
    b.annotate(|s| s.atomic_resp = Some(aresp));
    // A Terminate for a tagged buffer error, with the offending DDP header copied.
    let bad = SegmentHeader::tagged(Opcode::Write, true, Stag(0x0bad_0000), TaggedOffset(0x10));
    let (bad_bytes, bad_len) = bad.to_bytes();
    let term = TerminateRepr {
        cause: TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag),
        ddp: Some(CopiedDdpHeader { segment_length: Some(78), header: &bad_bytes[..bad_len] }),
        rdmap_header: None,
    };
    let mut body = vec![0u8; term.buffer_len()];
    term.emit(&mut body).unwrap();
    b.fpdu(S2C, SegmentHeader::untagged(Opcode::Terminate, true, Msn(1), 0), &body);
    let copied = bad_bytes[..bad_len].to_vec();
    b.annotate(|s| s.terminate = Some((term.cause, copied, 78)));
    b
}

/// Writes the conversation as a pcap; returns its path and the first frame of each script entry.
fn write_pcap(b: &Builder, name: &str) -> (PathBuf, Vec<u64>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("tshark-{name}-{}.pcap", std::process::id()));
    // One FPDU per TCP segment, as siw sends them.
    let opts = ConversationOptions { max_segment: iwarp_pcap::MAX_SEGMENT, ..Default::default() };
    let conv = Conversation::build(&opts, &b.script).unwrap();
    conv.write(std::fs::File::create(&path).unwrap()).unwrap();
    let frames = conv.entries.iter().map(|e| e.unwrap().0).collect();
    (path, frames)
}

fn run(tshark: &str, args: &[&str]) -> String {
    let out = Command::new(tshark).args(args).env("LC_ALL", "C").output().unwrap();
    assert!(out.status.success(), "tshark {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const FIELDS: &[&str] = &[
    "frame.number",
    "iwarp_mpa.rev",
    "iwarp_mpa.crc_flag",
    "iwarp_mpa.marker_flag",
    "iwarp_mpa.res",
    "iwarp_mpa.pdlength",
    "iwarp_mpa.privatedata",
    "iwarp_mpa.ulpdulength",
    "iwarp_mpa.crc",
    "iwarp_mpa.crc_check",
    "iwarp_ddp.tagged_flag",
    "iwarp_ddp.last_flag",
    "iwarp_ddp.stag",
    "iwarp_ddp.tagged_offset",
    "iwarp_ddp.qn",
    "iwarp_ddp.msn",
    "iwarp_ddp.mo",
    "iwarp_rdma.opcode",
    "iwarp_rdma.inval_stag",
    "iwarp_rdma.sinkstag",
    "iwarp_rdma.sinkto",
    "iwarp_rdma.rdmardsz",
    "iwarp_rdma.srcstag",
    "iwarp_rdma.srcto",
    "iwarp_rdma.atomic.opcode",
    "iwarp_rdma.atomic.request_identifier",
    "iwarp_rdma.atomic.remote_stag",
    "iwarp_rdma.atomic.remote_tagged_offset",
    "iwarp_rdma.atomic.add_data",
    "iwarp_rdma.atomic.original_request_identifier",
    "iwarp_rdma.atomic.original_remote_data_value",
    "iwarp_rdma.term_layer",
    "iwarp_rdma.term_etype_ddp",
    "iwarp_rdma.term_errcode_ddp_tagged",
    "iwarp_rdma.term_hdrct_m",
    "iwarp_rdma.hdrct_d",
    "iwarp_rdma.hdrct_r",
    "iwarp_rdma.term_ddp_seg_len",
    "iwarp_rdma.term_ddp_h",
    "iwarp_mpa.marker_fpduptr",
];

/// tshark's field rows by frame number, each a map from field name to value.
fn fields(tshark: &str, pcap: &Path) -> BTreeMap<u64, BTreeMap<&'static str, String>> {
    let mut args = vec!["-r", pcap.to_str().unwrap(), "--disable-heuristic", "rpcrdma_iwarp", "-T", "fields"];
    args.extend_from_slice(&["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in FIELDS {
        args.extend_from_slice(&["-e", f]);
    }
    let out = run(tshark, &args);
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), FIELDS.len(), "{line}");
        let frame: u64 = cols[0].parse().unwrap();
        let row: BTreeMap<&'static str, String> =
            FIELDS.iter().zip(&cols).filter(|(_, v)| !v.is_empty()).map(|(k, v)| (*k, v.to_string())).collect();
        rows.insert(frame, row);
    }
    rows
}

/// The "CRC check" lines of tshark's detail view, by frame number.
fn crc_labels(tshark: &str, pcap: &Path) -> BTreeMap<u64, Vec<String>> {
    let out =
        run(tshark, &["-r", pcap.to_str().unwrap(), "--disable-heuristic", "rpcrdma_iwarp", "-V", "-O", "iwarp_mpa"]);
    let mut labels: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut frame = 0;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Frame ") {
            frame = rest.split(':').next().unwrap().parse().unwrap();
        } else if line.trim_start().starts_with("CRC check:") {
            labels.entry(frame).or_default().push(line.trim().to_string());
        }
    }
    labels
}

/// The expert infos of `tshark -q -z expert`, one line each: "severity: count group protocol
/// summary".
fn expert(tshark: &str, pcap: &Path) -> Vec<String> {
    let out =
        run(tshark, &["-r", pcap.to_str().unwrap(), "--disable-heuristic", "rpcrdma_iwarp", "-q", "-z", "expert"]);
    let mut items = Vec::new();
    let mut severity = "";
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            // A heading such as "Warns (4)".
            [name, count] if count.starts_with('(') && count.ends_with(')') => severity = name,
            [n, ..] if n.parse::<u32>().is_ok() => items.push(format!("{severity}: {}", words.join(" "))),
            _ => {}
        }
    }
    items
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares one FPDU's tshark fields with what we encoded.
fn check_fpdu(frame: u64, sent: &Sent, row: &BTreeMap<&'static str, String>, crc: bool) {
    let get = |k: &str| row.get(k).map(String::as_str).unwrap_or_else(|| panic!("frame {frame}: no {k} in {row:?}"));
    let h = &sent.header;
    assert_eq!(get("iwarp_mpa.ulpdulength"), sent.ulpdu_len.to_string(), "frame {frame}");
    // tshark prints the CRC field's wire bytes as one hex number.
    let shown = format!("{:#010x}", u32::from_be_bytes(sent.crc_wire));
    if crc {
        assert_eq!(get("iwarp_mpa.crc_check"), shown, "frame {frame}");
        assert!(!row.contains_key("iwarp_mpa.crc"));
    } else {
        assert_eq!(get("iwarp_mpa.crc"), "0x00000000", "frame {frame}");
        assert!(!row.contains_key("iwarp_mpa.crc_check"));
    }
    assert_eq!(get("iwarp_rdma.opcode"), format!("{:#04x}", u8::from(h.opcode)), "frame {frame}");
    assert_eq!(get("iwarp_ddp.last_flag"), if h.last { "1" } else { "0" }, "frame {frame}");
    match h.placement {
        Placement::Tagged { stag, to } => {
            assert_eq!(get("iwarp_ddp.tagged_flag"), "1");
            assert_eq!(get("iwarp_ddp.stag"), format!("{:#010x}", stag.0), "frame {frame}");
            assert_eq!(get("iwarp_ddp.tagged_offset"), format!("{:#018x}", to.0), "frame {frame}");
        }
        Placement::Untagged { qn, msn, mo } => {
            assert_eq!(get("iwarp_ddp.tagged_flag"), "0");
            assert_eq!(get("iwarp_ddp.qn"), qn.0.to_string(), "frame {frame}");
            assert_eq!(get("iwarp_ddp.msn"), msn.0.to_string(), "frame {frame}");
            assert_eq!(get("iwarp_ddp.mo"), mo.to_string(), "frame {frame}");
            if h.opcode.invalidates() {
                assert_eq!(get("iwarp_rdma.inval_stag"), h.inval_stag.0.to_string(), "frame {frame}");
            }
        }
    }
    let markers: Vec<String> = sent.markers.iter().map(u16::to_string).collect();
    assert_eq!(row.get("iwarp_mpa.marker_fpduptr").map_or("", String::as_str), markers.join(","), "frame {frame}");
    if let Some(rr) = sent.read {
        assert_eq!(get("iwarp_rdma.sinkstag"), format!("{:#010x}", rr.sink_stag.0));
        assert_eq!(get("iwarp_rdma.sinkto"), format!("{:#018x}", rr.sink_to.0));
        assert_eq!(get("iwarp_rdma.rdmardsz"), rr.size.to_string());
        assert_eq!(get("iwarp_rdma.srcstag"), format!("{:#010x}", rr.src_stag.0));
        assert_eq!(get("iwarp_rdma.srcto"), format!("{:#018x}", rr.src_to.0));
    }
    if let Some(a) = sent.atomic_req {
        assert_eq!(get("iwarp_rdma.atomic.opcode"), u8::from(a.opcode).to_string());
        assert_eq!(get("iwarp_rdma.atomic.request_identifier"), a.request_id.to_string());
        assert_eq!(get("iwarp_rdma.atomic.remote_stag"), a.stag.0.to_string());
        assert_eq!(get("iwarp_rdma.atomic.remote_tagged_offset"), a.to.0.to_string());
        assert_eq!(get("iwarp_rdma.atomic.add_data"), a.add_or_swap.to_string());
    }
    if let Some(a) = sent.atomic_resp {
        assert_eq!(get("iwarp_rdma.atomic.original_request_identifier"), a.request_id.to_string());
        assert_eq!(get("iwarp_rdma.atomic.original_remote_data_value"), a.original.to_string());
    }
    if let Some((cause, copied, seg_len)) = &sent.terminate {
        let code = cause.code();
        assert_eq!(get("iwarp_rdma.term_layer"), format!("{:#04x}", code.layer));
        assert_eq!(get("iwarp_rdma.term_etype_ddp"), format!("{:#04x}", code.etype));
        assert_eq!(get("iwarp_rdma.term_errcode_ddp_tagged"), format!("{:#04x}", code.ecode));
        assert_eq!(get("iwarp_rdma.term_hdrct_m"), "1");
        assert_eq!(get("iwarp_rdma.hdrct_d"), "1");
        assert_eq!(get("iwarp_rdma.hdrct_r"), "0");
        assert_eq!(get("iwarp_rdma.term_ddp_seg_len"), hex(&seg_len.to_be_bytes()));
        assert_eq!(get("iwarp_rdma.term_ddp_h"), hex(copied));
    }
}

/// The expert infos tshark 4.0.17 raises for such a conversation, and no others: the RFC 6581
/// enhanced (S) flag sits in what RFC 5044 calls reserved bits and the revision is 2, once per
/// MPA frame; the rest is TCP's connection bookkeeping.
const EXPECTED_EXPERT: [&str; 7] = [
    "Warns: 2 Request IWARP_MPA Res field is NOT set to zero as required by RFC 5044",
    "Warns: 2 Request IWARP_MPA Rev field is NOT set to one as required by RFC 5044",
    "Notes: 1 Sequence TCP This frame initiates the connection closing",
    "Notes: 1 Sequence TCP This frame undergoes the connection closing",
    "Chats: 1 Sequence TCP Connection establish request (SYN): server port 7174",
    "Chats: 1 Sequence TCP Connection establish acknowledge (SYN+ACK): server port 7174",
    "Chats: 2 Sequence TCP Connection finish (FIN)",
];

fn check_conversation(crc: bool, markers_on: bool) {
    let markers = markers_on;
    let Some(tshark) = tshark() else { return };
    let name = format!("crc{}-markers{}", u8::from(crc), u8::from(markers));
    let b = build(crc, markers);
    let (pcap, first_frames) = write_pcap(&b, &name);
    let rows = fields(tshark, &pcap);
    let labels = crc_labels(tshark, &pcap);
    let experts = expert(tshark, &pcap);
    std::fs::remove_file(&pcap).unwrap();

    // The MPA Request and Reply.
    for (entry, pd) in [(0usize, "0004000469776172"), (1, "00040004")] {
        let row = &rows[&first_frames[entry]];
        assert_eq!(row["iwarp_mpa.rev"], "2");
        assert_eq!(row["iwarp_mpa.crc_flag"], if crc { "1" } else { "0" });
        assert_eq!(row["iwarp_mpa.marker_flag"], if markers { "1" } else { "0" });
        assert_eq!(row["iwarp_mpa.res"], "0x10");
        assert!(row["iwarp_mpa.privatedata"].starts_with(pd), "{row:?}");
    }
    assert_eq!(rows[&first_frames[0]]["iwarp_mpa.pdlength"], "9");

    let mut checked = 0;
    for (entry, sent) in &b.sent {
        let frame = first_frames[*entry];
        let row = rows.get(&frame).unwrap_or_else(|| panic!("frame {frame} missing"));
        check_fpdu(frame, sent, row, crc);
        let l = labels.get(&frame).map(Vec::as_slice).unwrap_or(&[]);
        if crc {
            let shown = format!("{:#010x}", u32::from_be_bytes(sent.crc_wire));
            assert_eq!(l, [format!("CRC check: {shown} (Good CRC32)")], "frame {frame}");
        } else {
            assert!(l.is_empty());
        }
        checked += 1;
    }
    assert_eq!(checked, 17);
    // With markers, both directions start with one and the longer FPDUs hold several.
    let markers: usize = b.sent.values().map(|s| s.markers.len()).sum();
    assert_eq!(markers > 10, markers_on, "{markers} markers");
    // tshark recomputed every CRC and found each good (the labels above, one per FPDU).
    let good = labels.values().flatten().filter(|l| l.ends_with("(Good CRC32)")).count();
    assert_eq!(good, if crc { 17 } else { 0 });
    if crc && !markers_on {
        // The first FPDU is protocol-notes §1.7's "hello" Send, whose CRC is b9 90 b1 0c.
        let hello = &b.sent[&2];
        assert_eq!((hello.dir, hello.header.opcode, hello.ulpdu_len), (C2S, Opcode::Send, 23));
        assert_eq!(hello.crc_wire, [0xb9, 0x90, 0xb1, 0x0c]);
    }
    assert_eq!(experts, EXPECTED_EXPERT, "tshark expert infos");
}

#[test]
fn tshark_decodes_our_conversation_with_crc() {
    check_conversation(true, false);
}

#[test]
fn tshark_decodes_our_conversation_without_crc() {
    check_conversation(false, false);
}

#[test]
fn tshark_decodes_our_conversation_with_markers() {
    check_conversation(true, true);
}

#[test]
fn tshark_flags_a_corrupted_crc() {
    // Guards the checks above: a CRC we break is one tshark reports as bad, expecting ours.
    let Some(tshark) = tshark() else { return };
    let mut b = build(true, false);
    let (&entry, sent) = b.sent.iter().next().unwrap();
    let good = u32::from_be_bytes(sent.crc_wire);
    let fpdu = &mut b.script[entry].1;
    let n = fpdu.len();
    fpdu[n - 1] ^= 0xff;
    let bad = u32::from_be_bytes(fpdu[n - 4..].try_into().unwrap());
    let (pcap, first_frames) = write_pcap(&b, "badcrc");
    let labels = crc_labels(tshark, &pcap);
    let experts = expert(tshark, &pcap);
    std::fs::remove_file(&pcap).unwrap();
    assert_eq!(labels[&first_frames[entry]], [format!("CRC check: {bad:#010x} (Bad CRC32, should be {good:#010x})")]);
    // tshark 4.0.17 raises no expert info for a bad CRC: only the label tells.
    assert_eq!(experts, EXPECTED_EXPERT);
}
