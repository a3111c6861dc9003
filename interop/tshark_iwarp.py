"""tshark's iWARP dissectors (MPA, DDP/RDMAP) over a capture, shared by interop/matrix and
interop/nvmf: how tshark is run, and what its verbose MPA tree and expert info say, frame by
frame. The verdicts stay with each runner.

MPA has no port of its own: its heuristic must be tried before the dissectors registered on ports
(Wireshark 4.0 registers IRC on TCP 57000, which slirp may pick for a connection), and with
interop/mpa_short_head.lua, without which Wireshark 4.0 loses FPDU sync wherever an FPDU's first
1-7 bytes arrive on their own (docs/interop.md)."""

import os
import re
import subprocess

HERE = os.path.dirname(os.path.realpath(__file__))
MPA_SHORT_HEAD = os.path.join(HERE, "mpa_short_head.lua")

# warnings every MPA Request/Reply of ours draws (MPA revision 2, RFC 6581, is not RFC 5044's)
EXPECTED_WARNS = [
    re.compile(r"Res field is NOT set to zero"),
    re.compile(r"Rev field is NOT set to one"),
]
# noted, not failed: TCP's own events. A D-SACK is the receiver reporting a segment it got
# twice (a retransmission that was not needed: over a tap device to a TCG guest, whose ACKs
# come late, the sender's timers fire); the stream iwdump and tshark reassemble is unchanged.
NOTED_WARNS = [re.compile(r"Connection reset \(RST\)"), re.compile(r"window .*full|[Zz]ero window"),
               re.compile(r"D-SACK Sequence")]
UNSEEN_SEGMENT = re.compile(r"Previous segment\(s\) not captured|ACKed segment that wasn't captured")
EXPERT_HEAD = re.compile(r"^(Errors|Warns|Notes|Chats|Comments) \((\d+)\)$")


def tshark_cmd(pcap, out_of_order=False):
    """out_of_order: let TCP reassemble segments that the capture holds out of order (a capture on
    the host's loopback may record a stream's segments in another order than they were sent:
    without it, the MPA dissector loses those FPDUs)."""
    return ["tshark", "--disable-heuristic", "rpcrdma_iwarp", "-o", "tcp.try_heuristic_first:TRUE"] + \
        (["-o", "tcp.reassemble_out_of_order:TRUE"] if out_of_order else []) + \
        ["-X", "lua_script:" + MPA_SHORT_HEAD, "-r", pcap, "-O", "iwarp_mpa", "-z", "expert"]


def run(pcap, timeout=None, out_of_order=False):
    """tshark's verbose MPA tree and expert info of pcap -> (stdout, problem or None)."""
    try:
        r = subprocess.run(tshark_cmd(pcap, out_of_order), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "", "tshark timed out after %s s" % timeout
    except OSError as e:
        return "", "tshark failed: %s" % e
    # as root, tshark warns once on stderr (Lua scripts make it say so); anything else there
    # (a Lua error, say) fails the check
    err = "\n".join(l for l in r.stderr.splitlines() if l.strip() and not l.startswith('Running as user "root"'))
    if r.returncode != 0 or err:
        return r.stdout, "tshark failed (exit %d): %s" % (r.returncode, err[:200])
    return r.stdout, None


def parse(text):
    """tshark's output (run) -> dict:
    fpdu_frames  [frame] per FPDU (its ULPDU length line: the frame that completes it)
    fpdu_lens    [ULPDU length] per FPDU, in the same order
    good, bad    [(frame, crc hex)] per CRC check, by verdict
    malformed    [frame] with a [Malformed Packet] mark
    undecoded    [frame] whose TCP payload no iWARP dissector took: Data without MPA in the frame,
                 or payload neither in an MPA frame nor in the reassembly of one (this includes
                 retransmissions, which tshark does not dissect again: see retransmissions)
    mpa_frames   number of MPA frames (Request/Reply and FPDUs)
    expert       [(section, line)] of the expert info at the end ("Errors", "Warns", ...)"""
    out = {"fpdu_frames": [], "fpdu_lens": [], "good": [], "bad": [], "malformed": [], "undecoded": [], "mpa_frames": 0,
           "expert": []}
    frame = 0
    payload, mpa, data, reassembled = {}, set(), set(), set()
    lines = text.splitlines()
    expert_at = len(lines)
    for k, line in enumerate(lines):
        m = re.match(r"^Frame (\d+):", line)
        if m:
            frame = int(m.group(1))
            continue
        if EXPERT_HEAD.match(line):
            expert_at = k
            break
        m = re.match(r"^Transmission Control Protocol, .*Len: (\d+)", line)
        if m:
            payload[frame] = int(m.group(1))
        elif line.startswith("iWARP Marker Protocol data unit Aligned framing"):
            mpa.add(frame)
            out["mpa_frames"] += 1
        elif re.match(r"^Data \(\d+ bytes\)", line):
            data.add(frame)
        m = re.match(r"^\[\d+ Reassembled TCP Segments \(\d+ bytes\): (.*)\]$", line)
        if m:
            reassembled.update((frame, int(x)) for x in re.findall(r"#(\d+)\(\d+\)", m.group(1)))
        m = re.match(r"^\s+ULPDU length: (\d+)", line)
        if m:
            out["fpdu_frames"].append(frame)
            out["fpdu_lens"].append(int(m.group(1)))
        m = re.match(r"^\s+CRC check: 0x([0-9a-f]{8})", line)
        if m:
            (out["good"] if "(Good CRC32)" in line else out["bad"]).append((frame, m.group(1)))
        if "[Malformed Packet" in line:
            out["malformed"].append(frame)
    in_mpa = {seg for by, seg in reassembled if by in mpa}
    out["undecoded"] = sorted(f for f, n in payload.items()
                              if n > 0 and f not in mpa and (f in data or f not in in_mpa))
    sect = None
    for line in lines[expert_at:]:
        m = EXPERT_HEAD.match(line)
        if m:
            sect = m.group(1)
            continue
        if not sect or not line.strip() or line.startswith("=") or "Frequency" in line:
            continue
        out["expert"].append((sect, line))
    return out


def unseen_data(pcap):
    """The frames tshark flags as following a segment it did not see (or acknowledging one)
    that carry payload: [(frame, length)]. A non-empty list means the capture may miss data."""
    r = subprocess.run(["tshark", "-r", pcap, "-Y", "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
                        "-T", "fields", "-e", "frame.number", "-e", "tcp.len"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    rows = [l.split() for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or not rows:
        return [("tshark", -1)]        # cannot tell: count it as missing data
    return [(int(a), int(b)) for a, b in rows if int(b) > 0]


def retransmissions(pcap):
    """The frames of pcap that tshark's TCP analysis marks as retransmissions (their data was seen
    before; tshark does not hand it to MPA again), as a set; None if tshark fails."""
    r = subprocess.run(["tshark", "-r", pcap, "-Y", "tcp.analysis.retransmission || tcp.analysis.fast_retransmission"
                        " || tcp.analysis.spurious_retransmission", "-T", "fields", "-e", "frame.number"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    if r.returncode != 0:
        return None
    return {int(l) for l in r.stdout.split()}
