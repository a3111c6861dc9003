//! iwdump: decodes the iWARP connections in pcap captures.
//!
//! For every TCP connection of every capture: the MPA Request and Reply (revision, flags,
//! RFC 6581 IRD/ORD and peer-to-peer/RTR bits, private data), then one line per FPDU (frame,
//! direction, opcode, L flag, placement, payload length, CRC status) with the bodies of Read
//! Requests, Atomics and Terminates (a Terminate in the Linux siw bit layout is shown both
//! ways). `--summary` counts instead; `--json` prints one JSON object per line.
//!
//! Exit status: 0 when everything decoded, 1 when a CRC is bad or a frame is malformed (after
//! printing everything), 2 when a file cannot be read.
#![forbid(unsafe_code)]

#[path = "iwdump/decode.rs"]
mod decode;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iwarp_pcap::{Capture, Connection, Direction};
use iwarp_wire::mpa::rr::{self, EnhancedParams};
use iwarp_wire::terminate::TerminateLayout;
use iwarp_wire::{Opcode, Placement};
use serde::Serialize;

use decode::{Body, CrcStatus, Decoded, Fpdu, Kind, MpaFrame};

/// Decode the iWARP (MPA, DDP, RDMAP) connections in pcap captures.
///
/// CRCs are shown as their four wire bytes, as Wireshark shows them.
#[derive(Parser, Debug)]
#[command(name = "iwdump", version)]
struct Args {
    /// Capture files (pcap or pcapng; Ethernet, Linux cooked, loopback or raw IP).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Per connection and direction: FPDUs, messages and payload bytes per opcode, CRC status.
    #[arg(long)]
    summary: bool,
    /// One JSON object per line: each connection, MPA frame, FPDU and problem.
    #[arg(long, conflicts_with = "summary")]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut unreadable = false;
    let mut errors = false;
    for path in &args.files {
        let name = path.display().to_string();
        let cap = match iwarp_pcap::read_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("iwdump: {name}: {e}");
                unreadable = true;
                continue;
            }
        };
        let decoded: Vec<(&Connection, Decoded)> = cap.connections.iter().map(|c| (c, decode::decode(c))).collect();
        errors |= decoded.iter().any(|(_, d)| d.has_errors());
        let res = if args.json {
            json(&mut out, &name, &decoded)
        } else if args.summary {
            summary(&mut out, &name, &cap, &decoded)
        } else {
            text(&mut out, &name, &cap, &decoded)
        };
        if let Err(e) = res.and_then(|_| out.flush()) {
            // A closed pipe (`iwdump ... | head`) is not worth a message.
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("iwdump: {e}");
            }
            return ExitCode::from(2);
        }
    }
    if unreadable {
        ExitCode::from(2)
    } else if errors {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn file_line(name: &str, cap: &Capture, connections: usize) -> String {
    let s = if connections == 1 { "" } else { "s" };
    format!("{name}: {} frames, {connections} TCP connection{s}", cap.frames)
}

fn arrow(dir: Direction) -> &'static str {
    match dir {
        Direction::ClientToServer => "c>s",
        Direction::ServerToClient => "s>c",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn frames(f: &Fpdu) -> String {
    if f.frames.0 == f.frames.1 {
        f.frames.0.to_string()
    } else {
        format!("{}-{}", f.frames.0, f.frames.1)
    }
}

/// The opcode's name from its row of the opcode table; a reserved one by its value.
fn opcode_name(op: Opcode) -> String {
    match op.descriptor() {
        Some(d) => d.name.to_string(),
        None => format!("Opcode{:#x}", u8::from(op)),
    }
}

fn flags(m: &MpaFrame) -> String {
    let mut v = Vec::new();
    for (on, name) in [(m.markers, "M"), (m.crc, "C"), (m.reject, "R"), (m.enhanced.is_some(), "S")] {
        if on {
            v.push(name);
        }
    }
    let mut s = if v.is_empty() { "-".to_string() } else { v.join(",") };
    if m.reserved_flags != 0 {
        let _ = write!(s, " reserved={:#04x}", m.reserved_flags);
    }
    s
}

fn enhanced(e: &EnhancedParams) -> String {
    let ird_ord = |v: u16| if v == rr::IRD_ORD_NO_NEGOTIATION { "none".to_string() } else { v.to_string() };
    let mut s = format!("IRD {} ORD {}", ird_ord(e.ird), ird_ord(e.ord));
    if e.peer_to_peer {
        let mut rtr = Vec::new();
        for (on, name) in [(e.rtr.send, "Send"), (e.rtr.write, "Write"), (e.rtr.read, "Read")] {
            if on {
                rtr.push(name);
            }
        }
        let _ = write!(s, " peer-to-peer RTR {}", if rtr.is_empty() { "none".into() } else { rtr.join("/") });
    } else {
        s.push_str(" client/server");
    }
    s
}

fn mpa_line(m: &MpaFrame) -> String {
    let what = match m.kind {
        rr::FrameKind::Request => "MPA Request",
        rr::FrameKind::Reply => "MPA Reply  ",
    };
    let mut s = format!("  {what} frame {:<5} {} rev {} flags {}", m.frame, arrow(m.dir), m.revision, flags(m));
    if let Some(e) = &m.enhanced {
        let _ = write!(s, ", {}", enhanced(e));
    }
    if m.private_data.is_empty() {
        s.push_str(", no private data");
    } else {
        let _ = write!(s, ", private data ({} bytes) {}", m.private_data.len(), hex(&m.private_data));
    }
    if m.kind == rr::FrameKind::Reply {
        s.push_str(if m.reject { " -- REJECTED" } else { " -- accepted" });
    }
    s
}

fn placement(p: &Placement) -> String {
    match *p {
        Placement::Tagged { stag, to } => format!("stag {stag} to {:#018x}", to.0),
        Placement::Untagged { qn, msn, mo } => format!("qn {} msn {} mo {}", qn.0, msn.0, mo),
    }
}

fn crc_text(c: &CrcStatus) -> String {
    match c {
        CrcStatus::Good { wire } => format!("good {}", hex(wire)),
        CrcStatus::Bad { wire, expected } => format!("BAD {} (expected {})", hex(wire), hex(expected)),
        CrcStatus::Off { wire } => {
            if *wire == [0; 4] {
                "off".to_string()
            } else {
                format!("off {}", hex(wire))
            }
        }
        CrcStatus::NotCaptured => "not captured".to_string(),
    }
}

fn body_lines(b: &Body) -> Vec<String> {
    match b {
        Body::Read(r) => vec![format!(
            "read {} bytes from stag {} to {:#018x} into stag {} to {:#018x}",
            r.size, r.src_stag, r.src_to.0, r.sink_stag, r.sink_to.0
        )],
        Body::AtomicRequest(a) => vec![format!(
            "atomic {:?} id {} at stag {} to {:#018x}: add/swap {:#x} mask {:#x}, compare {:#x} mask {:#x}",
            a.opcode, a.request_id, a.stag, a.to.0, a.add_or_swap, a.add_or_swap_mask, a.compare, a.compare_mask
        )],
        Body::AtomicResponse(a) => {
            vec![format!("atomic response id {}: original value {:#x}", a.request_id, a.original)]
        }
        Body::Immediate(v) => vec![format!("immediate data {v:#018x}")],
        Body::Terminate(t) => {
            let mut v = vec![match t.layout {
                TerminateLayout::Rfc5040 => format!("terminate: {}", t.preferred),
                TerminateLayout::LinuxSiw => {
                    format!("terminate (Linux siw bit layout): {}; read per RFC 5040: {}", t.siw, t.rfc)
                }
                TerminateLayout::Ambiguous => {
                    format!("terminate: {} (RFC 5040 reading); Linux siw reading: {}", t.rfc, t.siw)
                }
                TerminateLayout::Inconsistent => {
                    format!(
                        "terminate (inconsistent either way): RFC 5040 reading {}; Linux siw reading {}",
                        t.rfc, t.siw
                    )
                }
            }];
            if let Some(h) = &t.ddp_header {
                let len = t.segment_length.map(|l| format!(", segment length {l}")).unwrap_or_default();
                v.push(format!("terminated DDP header {}{len}", hex(h)));
            }
            if let Some(h) = &t.rdma_header {
                v.push(format!("terminated RDMA header {}", hex(h)));
            }
            v
        }
        Body::Malformed(e) => vec![format!("MALFORMED body: {e}")],
    }
}

fn connection_line(i: usize, c: &Connection) -> String {
    format!(
        "connection {}: client {} -> server {}, frames {}-{}",
        i + 1,
        c.client,
        c.server,
        c.first_frame,
        c.last_frame
    )
}

fn negotiated(d: &Decoded) -> Option<String> {
    let Kind::Iwarp { crc, markers, full_operation: true, .. } = &d.kind else { return None };
    let m = |on: bool| if on { "on" } else { "off" };
    Some(format!("  full operation: CRC {}, markers c>s {} s>c {}", m(*crc), m(markers.0), m(markers.1)))
}

fn closing(c: &Connection) -> Vec<String> {
    let mut v = Vec::new();
    for dir in [Direction::ClientToServer, Direction::ServerToClient] {
        let s = c.stream(dir);
        if let Some(f) = s.rst_frame() {
            v.push(format!("{} reset (RST) in frame {f}", arrow(dir)));
        } else if let Some(f) = s.fin_frame() {
            v.push(format!("{} closed (FIN) in frame {f}", arrow(dir)));
        }
    }
    v
}

fn text(out: &mut impl Write, name: &str, cap: &Capture, decoded: &[(&Connection, Decoded)]) -> io::Result<()> {
    writeln!(out, "{}", file_line(name, cap, decoded.len()))?;
    for (i, (c, d)) in decoded.iter().enumerate() {
        writeln!(out)?;
        writeln!(out, "{}", connection_line(i, c))?;
        let Kind::Iwarp { request, reply, .. } = &d.kind else {
            let (a, b) = (c.client_to_server.data().len(), c.server_to_client.data().len());
            writeln!(out, "  not iWARP: no MPA Request at the start of the client's stream ({a} / {b} bytes)")?;
            continue;
        };
        for m in [request, reply].into_iter().flatten() {
            writeln!(out, "{}", mpa_line(m))?;
        }
        if request.is_some() && reply.is_none() {
            writeln!(out, "  no MPA Reply")?;
        }
        if let Some(n) = negotiated(d) {
            writeln!(out, "{n}")?;
        }
        if !d.fpdus.is_empty() {
            writeln!(out, "  {:>9} dir {:<17}L {:<44} {:>6}  crc", "frame", "opcode", "placement", "len")?;
        }
        // FPDUs and problems in frame order.
        let mut problems = d.problems.iter().peekable();
        for f in &d.fpdus {
            while let Some(p) = problems.next_if(|p| p.frame.is_some_and(|pf| pf <= f.frames.0)) {
                writeln!(out, "  !! {} frame {}: {}", arrow(p.dir), p.frame.unwrap_or(0), p.message)?;
            }
            let (op, last, place) = match &f.header {
                Ok(h) => (opcode_name(h.opcode), if h.last { "L" } else { "-" }, placement(&h.placement)),
                Err(e) => ("MALFORMED".to_string(), "?", format!("{e} (header {})", hex(&f.raw_header))),
            };
            writeln!(
                out,
                "  {:>9} {} {:<17}{} {:<44} {:>6}  {}",
                frames(f),
                arrow(f.dir),
                op,
                last,
                place,
                f.payload_len,
                crc_text(&f.crc)
            )?;
            if let Some(b) = &f.body {
                for line in body_lines(b) {
                    writeln!(out, "  {:>9}     {line}", "")?;
                }
            }
        }
        for p in problems {
            let at = p.frame.map(|f| format!(" frame {f}")).unwrap_or_default();
            writeln!(out, "  !! {}{at}: {}", arrow(p.dir), p.message)?;
        }
        let close = closing(c);
        if !close.is_empty() {
            writeln!(out, "  {}", close.join("; "))?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Count {
    fpdus: u64,
    messages: u64,
    bytes: u64,
}

fn summary(out: &mut impl Write, name: &str, cap: &Capture, decoded: &[(&Connection, Decoded)]) -> io::Result<()> {
    writeln!(out, "{}", file_line(name, cap, decoded.len()))?;
    for (i, (c, d)) in decoded.iter().enumerate() {
        writeln!(out, "{}", connection_line(i, c))?;
        let Kind::Iwarp { request, reply, .. } = &d.kind else {
            writeln!(out, "  not iWARP")?;
            continue;
        };
        for m in [request, reply].into_iter().flatten() {
            writeln!(out, "{}", mpa_line(m))?;
        }
        if let Some(n) = negotiated(d) {
            writeln!(out, "{n}")?;
        }
        let mut counts: BTreeMap<(&str, String), Count> = BTreeMap::new();
        let (mut good, mut bad, mut off, mut lost) = (0, 0, 0, 0);
        for f in &d.fpdus {
            let (op, last) = match &f.header {
                Ok(h) => (opcode_name(h.opcode), h.last),
                Err(_) => ("malformed".to_string(), false),
            };
            let e = counts.entry((arrow(f.dir), op)).or_default();
            e.fpdus += 1;
            e.messages += u64::from(last);
            e.bytes += f.payload_len as u64;
            match f.crc {
                CrcStatus::Good { .. } => good += 1,
                CrcStatus::Bad { .. } => bad += 1,
                CrcStatus::Off { .. } => off += 1,
                CrcStatus::NotCaptured => lost += 1,
            }
        }
        if !counts.is_empty() {
            writeln!(out, "  dir {:<17} {:>7} {:>9} {:>14}", "opcode", "fpdus", "messages", "payload bytes")?;
            for ((dir, op), n) in &counts {
                writeln!(out, "  {dir} {op:<17} {:>7} {:>9} {:>14}", n.fpdus, n.messages, n.bytes)?;
            }
        }
        let lost = if lost > 0 { format!(", {lost} not captured") } else { String::new() };
        writeln!(out, "  {} FPDUs; CRC: {good} good, {bad} bad, {off} not checked{lost}", d.fpdus.len())?;
        let malformed = d.fpdus.iter().filter(|f| f.is_bad() && !matches!(f.crc, CrcStatus::Bad { .. })).count()
            + d.problems.iter().filter(|p| p.malformed).count();
        if malformed > 0 {
            writeln!(out, "  {malformed} malformed")?;
        }
        for p in &d.problems {
            let at = p.frame.map(|f| format!(" frame {f}")).unwrap_or_default();
            writeln!(out, "  !! {}{at}: {}", arrow(p.dir), p.message)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record<'a> {
    Connection {
        file: &'a str,
        connection: usize,
        client: String,
        server: String,
        first_frame: u64,
        last_frame: u64,
        iwarp: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        crc: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        markers_c2s: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        markers_s2c: Option<bool>,
        /// Frames of each direction's first RST and FIN.
        #[serde(skip_serializing_if = "Option::is_none")]
        rst_c2s: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rst_s2c: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fin_c2s: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fin_s2c: Option<u64>,
    },
    Mpa {
        file: &'a str,
        connection: usize,
        frame: u64,
        dir: &'static str,
        kind: &'static str,
        revision: u8,
        markers: bool,
        crc: bool,
        reject: bool,
        reserved_flags: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        ird: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ord: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        peer_to_peer: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rtr: Option<Vec<&'static str>>,
        private_data: String,
    },
    Fpdu(FpduJson<'a>),
    Problem {
        file: &'a str,
        connection: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        frame: Option<u64>,
        dir: &'static str,
        malformed: bool,
        message: &'a str,
    },
}

#[derive(Serialize)]
struct FpduJson<'a> {
    file: &'a str,
    connection: usize,
    frame: u64,
    last_frame: u64,
    /// Frame holding the trailer's (pad and CRC) first byte, and how many trailer bytes it
    /// holds (fewer than pad + 4 when the trailer is split across two segments).
    trailer_frame: u64,
    trailer_head: usize,
    dir: &'static str,
    stream_offset: u64,
    ulpdu_len: u16,
    payload_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    opcode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mo: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inval_stag: Option<String>,
    crc: &'static str,
    crc_wire: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    crc_expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<serde_json::Value>,
}

fn body_json(b: &Body) -> serde_json::Value {
    use serde_json::json;
    match b {
        Body::Read(r) => json!({
            "kind": "read_request",
            "sink_stag": r.sink_stag.to_string(),
            "sink_to": format!("{:#018x}", r.sink_to.0),
            "size": r.size,
            "src_stag": r.src_stag.to_string(),
            "src_to": format!("{:#018x}", r.src_to.0),
        }),
        Body::AtomicRequest(a) => json!({
            "kind": "atomic_request",
            "operation": format!("{:?}", a.opcode),
            "request_id": a.request_id,
            "stag": a.stag.to_string(),
            "to": format!("{:#018x}", a.to.0),
            "add_or_swap": a.add_or_swap,
            "add_or_swap_mask": a.add_or_swap_mask,
            "compare": a.compare,
            "compare_mask": a.compare_mask,
        }),
        Body::AtomicResponse(a) => {
            json!({"kind": "atomic_response", "request_id": a.request_id, "original": a.original})
        }
        Body::Immediate(v) => json!({"kind": "immediate_data", "value": v}),
        Body::Terminate(t) => json!({
            "kind": "terminate",
            "layout": format!("{:?}", t.layout),
            "cause": t.preferred,
            "rfc5040_reading": t.rfc,
            "linux_siw_reading": t.siw,
            "ddp_header": t.ddp_header.as_deref().map(hex),
            "segment_length": t.segment_length,
            "rdma_header": t.rdma_header.as_deref().map(hex),
        }),
        Body::Malformed(e) => json!({"kind": "malformed", "error": e}),
    }
}

fn fpdu_json<'a>(file: &'a str, connection: usize, f: &Fpdu) -> FpduJson<'a> {
    let (crc, crc_wire, crc_expected) = match f.crc {
        CrcStatus::Good { wire } => ("good", hex(&wire), None),
        CrcStatus::Bad { wire, expected } => ("bad", hex(&wire), Some(hex(&expected))),
        CrcStatus::Off { wire } => ("off", hex(&wire), None),
        CrcStatus::NotCaptured => ("not_captured", String::new(), None),
    };
    let mut j = FpduJson {
        file,
        connection,
        frame: f.frames.0,
        last_frame: f.frames.1,
        trailer_frame: f.trailer_frame,
        trailer_head: f.trailer_head,
        dir: arrow(f.dir),
        stream_offset: f.offset,
        ulpdu_len: f.ulpdu_len,
        payload_len: f.payload_len,
        opcode: None,
        last: None,
        stag: None,
        to: None,
        qn: None,
        msn: None,
        mo: None,
        inval_stag: None,
        crc,
        crc_wire,
        crc_expected,
        error: None,
        body: f.body.as_ref().map(body_json),
    };
    match &f.header {
        Ok(h) => {
            j.opcode = Some(opcode_name(h.opcode));
            j.last = Some(h.last);
            match h.placement {
                Placement::Tagged { stag, to } => {
                    j.stag = Some(stag.to_string());
                    j.to = Some(format!("{:#018x}", to.0));
                }
                Placement::Untagged { qn, msn, mo } => {
                    j.qn = Some(qn.0);
                    j.msn = Some(msn.0);
                    j.mo = Some(mo);
                    if h.opcode.invalidates() {
                        j.inval_stag = Some(h.inval_stag.to_string());
                    }
                }
            }
        }
        Err(e) => j.error = Some(format!("{e} (header {})", hex(&f.raw_header))),
    }
    j
}

fn json(out: &mut impl Write, file: &str, decoded: &[(&Connection, Decoded)]) -> io::Result<()> {
    let mut emit = |r: &Record<'_>| -> io::Result<()> {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)
    };
    for (i, (c, d)) in decoded.iter().enumerate() {
        let connection = i + 1;
        let (iwarp, crc, markers) = match &d.kind {
            Kind::Iwarp { crc, markers, full_operation, .. } => {
                (true, full_operation.then_some(*crc), full_operation.then_some(*markers))
            }
            Kind::NotIwarp => (false, None, None),
        };
        emit(&Record::Connection {
            file,
            connection,
            client: c.client.to_string(),
            server: c.server.to_string(),
            first_frame: c.first_frame,
            last_frame: c.last_frame,
            iwarp,
            crc,
            markers_c2s: markers.map(|m| m.0),
            markers_s2c: markers.map(|m| m.1),
            rst_c2s: c.client_to_server.rst_frame(),
            rst_s2c: c.server_to_client.rst_frame(),
            fin_c2s: c.client_to_server.fin_frame(),
            fin_s2c: c.server_to_client.fin_frame(),
        })?;
        if let Kind::Iwarp { request, reply, .. } = &d.kind {
            for m in [request, reply].into_iter().flatten() {
                let e = m.enhanced.as_ref();
                emit(&Record::Mpa {
                    file,
                    connection,
                    frame: m.frame,
                    dir: arrow(m.dir),
                    kind: if m.kind == rr::FrameKind::Request { "request" } else { "reply" },
                    revision: m.revision,
                    markers: m.markers,
                    crc: m.crc,
                    reject: m.reject,
                    reserved_flags: m.reserved_flags,
                    ird: e.map(|e| e.ird),
                    ord: e.map(|e| e.ord),
                    peer_to_peer: e.map(|e| e.peer_to_peer),
                    rtr: e.filter(|e| e.peer_to_peer).map(|e| {
                        [(e.rtr.send, "send"), (e.rtr.write, "write"), (e.rtr.read, "read")]
                            .into_iter()
                            .filter_map(|(on, n)| on.then_some(n))
                            .collect()
                    }),
                    private_data: hex(&m.private_data),
                })?;
            }
        }
        for f in &d.fpdus {
            emit(&Record::Fpdu(fpdu_json(file, connection, f)))?;
        }
        for p in &d.problems {
            emit(&Record::Problem {
                file,
                connection,
                frame: p.frame,
                dir: arrow(p.dir),
                malformed: p.malformed,
                message: &p.message,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_are_named_from_the_opcode_table() {
        for v in 0..16u8 {
            let op = Opcode::from(v);
            let want = if op.is_known() { format!("{op:?}") } else { format!("Opcode{v:#x}") };
            assert_eq!(opcode_name(op), want);
        }
        assert_eq!(opcode_name(Opcode::ReadRequest), "ReadRequest");
    }
}
