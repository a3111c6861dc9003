#!/usr/bin/env python3
"""Print the iWARP message sequence of a pcap, one line per MPA frame / FPDU.

Reads the TCP payload bytes with tshark, reassembles each direction of each
connection itself and parses MPA Request/Reply frames and FPDUs (DDP/RDMAP)
without the Wireshark iWARP dissectors, so FPDUs that share or straddle TCP
segments are handled. Connections are numbered in SYN order; "C>S" is the
direction from the connecting side. Send payloads of up to --max-hex bytes are
shown in hex, with a guess at the perftest control message they carry.

  pcap_sequence.py [--max-hex N] [--no-data] FILE.pcap...

Truncated frames (a capture taken with a snap length, or shrunk with
pcap_trim.py) are handled as far as possible: the missing bytes count as
unknown, payloads in them are not shown, and when an FPDU header falls into
unknown bytes the parser skips to the start of the next TCP segment and
resumes there if that segment starts with a plausible FPDU ("resync").
"""
import argparse
import collections
import struct
import subprocess
import sys

OPS = {0: "Write", 1: "ReadReq", 2: "ReadResp", 3: "Send", 4: "SendInv", 5: "SendSE",
       6: "SendSEInv", 7: "Terminate"}


def tshark_rows(pcap):
    cmd = ["tshark", "-r", pcap, "-Y", "tcp", "-T", "fields", "-E", "separator=|",
           "-e", "frame.number", "-e", "frame.time_relative", "-e", "tcp.stream",
           "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags.syn", "-e", "tcp.flags.ack",
           "-e", "tcp.flags.fin", "-e", "tcp.flags.reset", "-e", "tcp.payload",
           "-e", "frame.cap_len", "-e", "frame.len", "-e", "tcp.len"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         universal_newlines=True, check=True).stdout
    for line in out.splitlines():
        f = line.split("|")
        yield {"frame": int(f[0]), "t": float(f[1]), "stream": int(f[2]), "sport": int(f[3]),
               "dport": int(f[4]), "syn": f[5] in ("1", "True"), "ack": f[6] in ("1", "True"),
               "fin": f[7] in ("1", "True"), "rst": f[8] in ("1", "True"),
               "payload": bytes.fromhex(f[9].replace(":", "")) if f[9] else b"",
               "truncated": f[10] != f[11], "tcp_len": int(f[12] or 0)}


def guess_ctrl(payload):
    """Name the perftest control message a Send payload looks like (by size)."""
    n = len(payload)
    if n == 16 and payload[:1].isdigit():
        return "version %r" % payload.rstrip(b"\0").decode("ascii", "replace")
    if n == 56:
        lid, outr, qpn, psn, rkey, _pad, vaddr = struct.unpack(">IIIIIIQ", payload[:32])
        gid = payload[32:48].hex()
        srqn, gidx = struct.unpack(">Ii", payload[48:56])
        return ("pingpong_dest lid=%d out_reads=%d qpn=%#x psn=%#x rkey=%#x vaddr=%#x gid=%s srqn=%d gid_index=%d"
                % (lid, outr, qpn, psn, rkey, vaddr, gid, srqn, gidx))
    if n == 4:
        return "be32 %d" % struct.unpack(">I", payload)[0]
    if n == 2:
        return "ascii %r" % payload
    if n == 8:
        u = struct.unpack(">Q", payload)[0]
        d = struct.unpack(">d", payload)[0]
        return "be64 %d / be-double %g" % (u, d)
    if n == 16:
        addr, rkey, size = struct.unpack(">QII", payload)
        return "rping_rdma_info buf=%#x rkey=%#x size=%d" % (addr, rkey, size)
    return ""


class Dir:
    def __init__(self):
        self.buf = b""
        self.known = b""        # 1 per byte of buf that was captured, 0 if cut off
        self.mpa_done = False   # request/reply seen in this direction
        self.lost = False       # lost FPDU alignment; resync at the next segment

    def add(self, payload, missing):
        if self.lost:
            self.buf, self.known = b"", b""
        self.buf += payload + b"\0" * missing
        self.known += b"\1" * len(payload) + b"\0" * missing

    def drop(self, n):
        self.buf, self.known = self.buf[n:], self.known[n:]


def parse(buf_dir, is_initiator_dir, crc_on_hint, emit, t, frame, max_hex, show_data):
    d = buf_dir
    while True:
        if not d.mpa_done:
            if len(d.buf) < 20:
                return
            key = d.buf[:16]
            flags, rev, pdlen = d.buf[16], d.buf[17], struct.unpack(">H", d.buf[18:20])[0]
            if len(d.buf) < 20 + pdlen:
                return
            pd = d.buf[20:20 + pdlen]
            kind = {b"MPA ID Req Frame": "MPA-Req", b"MPA ID Rep Frame": "MPA-Rep"}.get(key, "MPA-?")
            fl = "".join(n for b, n in ((0x80, "M"), (0x40, "C"), (0x20, "R"), (0x10, "H"), (0x08, "G"))
                         if flags & b) or "-"
            txt = "%s rev=%d flags=%s pd=%s" % (kind, rev, fl, pd.hex() or "-")
            if flags & 0x10 and pdlen >= 4:
                ird, ordv = struct.unpack(">HH", pd[:4])
                txt += " (IRD=%d ORD=%d%s)" % (ird & 0x3fff, ordv & 0x3fff, " P2P" if ird & 0x8000 else "")
            emit(t, frame, txt)
            d.drop(20 + pdlen)
            d.mpa_done = True
            continue
        if len(d.buf) < 2:
            return
        if b"\0" in d.known[:20]:
            if not d.lost:
                emit(t, frame, "(FPDU header not captured; skipping to the next segment)")
            d.lost = True
            return
        ulen = struct.unpack(">H", d.buf[:2])[0]
        ctrl = struct.unpack(">H", d.buf[2:4])[0] if len(d.buf) >= 4 else 0
        if d.lost:
            if (ctrl >> 8) & 3 != 1 or (ctrl >> 6) & 3 != 1:
                return              # not an FPDU start; try the next segment
            emit(t, frame, "(resync)")
            d.lost = False
        pad = (4 - (2 + ulen) % 4) % 4
        total = 2 + ulen + pad + 4
        if len(d.buf) < total:
            return
        fp = d.buf[:total]
        complete = b"\0" not in d.known[:total]
        d.drop(total)
        tagged, last, op = bool(ctrl & 0x8000), bool(ctrl & 0x4000), ctrl & 0xF
        crc = fp[-4:].hex()
        name = OPS.get(op, "op%d" % op)
        if tagged:
            stag, to = struct.unpack(">IQ", fp[4:16])
            data = fp[16:2 + ulen]
            txt = "%s%s STag=%#010x TO=%#x len=%d" % (name, "" if last else "(more)", stag, to, len(data))
        else:
            _r, qn, msn, mo = struct.unpack(">IIII", fp[4:20])
            data = fp[20:2 + ulen]
            txt = "%s%s QN=%d MSN=%d MO=%d len=%d" % (name, "" if last else "(more)", qn, msn, mo, len(data))
            if op == 1 and len(data) >= 28:
                sstag, sto, sz, srcstag, srcto = struct.unpack(">IQIIQ", data[:28])
                txt += " sink=%#010x@%#x size=%d src=%#010x@%#x" % (sstag, sto, sz, srcstag, srcto)
                data = b""
            elif op == 7 and len(data) >= 4:
                txt += " ctrl=%s" % data[:4].hex()
        if crc != "00000000":
            txt += " crc=%s" % crc
        if not complete:
            txt += " (payload not captured)"
        elif data and show_data and len(data) <= max_hex:
            txt += " data=%s" % data.hex()
            if op in (3, 4, 5, 6):
                g = guess_ctrl(data)
                if g:
                    txt += "  [%s]" % g
            elif op == 0 and len(data) == 4:
                txt += "  [le32 %d]" % struct.unpack("<I", data)[0]
        emit(t, frame, txt)


def run(pcap, max_hex, show_data):
    rows = list(tshark_rows(pcap))
    conns = collections.OrderedDict()   # stream -> dict
    t0 = rows[0]["t"] if rows else 0
    print("### %s" % pcap)
    for r in rows:
        s = r["stream"]
        if r["syn"] and not r["ack"] and s not in conns:
            conns[s] = {"n": len(conns), "client": r["sport"], "server": r["dport"],
                        "dirs": {True: Dir(), False: Dir()}}
            print("%9.6f  #%-2d        TCP connect port %d -> %d" % (r["t"] - t0, conns[s]["n"], r["sport"], r["dport"]))
            continue
        if s not in conns:
            continue
        c = conns[s]
        from_client = r["sport"] == c["client"]
        arrow = "C>S" if from_client else "S>C"

        def emit(t, frame, txt, c=c, arrow=arrow):
            print("%9.6f  #%-2d %s  %s" % (t - t0, c["n"], arrow, txt))

        if r["tcp_len"]:
            d = c["dirs"][from_client]
            d.add(r["payload"], r["tcp_len"] - len(r["payload"]))
            parse(d, from_client, False, emit, r["t"], r["frame"], max_hex, show_data)
        if r["fin"]:
            emit(r["t"], r["frame"], "TCP FIN")
        if r["rst"]:
            emit(r["t"], r["frame"], "TCP RST")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pcap", nargs="+")
    ap.add_argument("--max-hex", type=int, default=64, help="show payloads up to this many bytes")
    ap.add_argument("--no-data", action="store_true", help="do not show payload bytes")
    a = ap.parse_args()
    for p in a.pcap:
        run(p, a.max_hex, not a.no_data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
