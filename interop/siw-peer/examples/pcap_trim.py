#!/usr/bin/env python3
"""Shrink a classic pcap (microsecond or nanosecond, any link type) for the repo.

Frames longer than --over bytes are cut to --keep bytes (their original length
stays in the record header, so tools show them as truncated). With --drop-acks,
TCP segments that carry no payload and no SYN/FIN/RST flag are left out.
Small frames (MPA Request/Reply, control Sends, short RDMA ops) stay whole, so
the control exchange of a large bandwidth run remains fully decodable while the
bulk data shrinks to its TCP + MPA/DDP headers.

  pcap_trim.py IN.pcap OUT.pcap [--over 300] [--keep 128] [--drop-acks]

Only Ethernet (DLT 1) and Linux cooked (DLT 113) IPv4 frames are inspected for
--drop-acks; other frames are copied (and truncated) as they are.
"""
import argparse
import struct
import sys


def tcp_info(linktype, frame):
    """Return (flags, payload_len) of an IPv4/TCP frame, or None."""
    if linktype == 1:
        off, ethertype = 14, struct.unpack(">H", frame[12:14])[0] if len(frame) >= 14 else 0
    elif linktype == 113:
        off, ethertype = 16, struct.unpack(">H", frame[14:16])[0] if len(frame) >= 16 else 0
    else:
        return None
    if ethertype != 0x0800 or len(frame) < off + 20:
        return None
    ihl = (frame[off] & 0x0F) * 4
    total = struct.unpack(">H", frame[off + 2:off + 4])[0]
    if frame[off + 9] != 6 or len(frame) < off + ihl + 20:
        return None
    t = off + ihl
    doff = (frame[t + 12] >> 4) * 4
    flags = frame[t + 13]
    return flags, total - ihl - doff


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--over", type=int, default=300, help="truncate frames longer than this")
    ap.add_argument("--keep", type=int, default=128, help="bytes kept of a truncated frame")
    ap.add_argument("--drop-acks", action="store_true", help="leave out pure TCP ACK segments")
    a = ap.parse_args()
    data = open(a.inp, "rb").read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        sys.exit("not a classic pcap file (pcapng is not supported)")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    out = [data[:24]]
    pos, n_in, n_out, n_cut = 24, 0, 0, 0
    while pos + 16 <= len(data):
        ts_s, ts_f, incl, orig = struct.unpack(e + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        n_in += 1
        if a.drop_acks:
            info = tcp_info(linktype, frame)
            if info and info[1] == 0 and not info[0] & 0x07:
                continue
        if incl > a.over:
            frame = frame[:a.keep]
            n_cut += 1
        out.append(struct.pack(e + "IIII", ts_s, ts_f, len(frame), orig) + frame)
        n_out += 1
    with open(a.out, "wb") as f:
        f.write(b"".join(out))
    print("%s: %d frames in, %d out, %d truncated to %d bytes" % (a.out, n_in, n_out, n_cut, a.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
