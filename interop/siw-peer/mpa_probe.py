#!/usr/bin/env python3
"""mpa_probe: send an MPA Request frame (RFC 5044 / RFC 6581) to an iWARP
listener on a loopback port (e.g. a siw-peer guest reached through a slirp
host forward) and decode the MPA Reply.  Optionally send an RFC 6581 RTR
FPDU (zero-length RDMA Write, or zero-length RDMA Read Request) afterwards
and dump anything the peer sends (decoded as MPA FPDUs) until it closes.

With --listen it plays the passive side instead: it listens on a loopback
port (a guest reaches host 127.0.0.1:PORT as 10.0.2.2:PORT), accepts one
connection, decodes the MPA Request, answers it (--reply accept|reject|none)
and dumps the FPDUs the initiator sends afterwards.

Only loopback addresses (127.0.0.0/8) are accepted.

Examples:
  mpa_probe.py 7174 --rev 1
  mpa_probe.py 7174 --rev 2 --ird 8 --ord 8
  mpa_probe.py 7174 --rev 2 --crc --p2p --rtr write --hold 2
  mpa_probe.py 9999 --listen --reply accept --hold 3
"""
import argparse
import ipaddress
import socket
import struct
import sys
import time

KEY_REQ = b"MPA ID Req Frame"
KEY_REP = b"MPA ID Rep Frame"
F_M, F_C, F_R, F_H, F_G = 0x80, 0x40, 0x20, 0x10, 0x08

# ---- CRC32c (Castagnoli, reflected 0x82F63B78) ------------------------------
_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _T.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def hexdump(b, indent="    "):
    lines = []
    for i in range(0, len(b), 16):
        chunk = b[i:i + 16]
        hx = " ".join("%02x" % x for x in chunk)
        asc = "".join(chr(x) if 32 <= x < 127 else "." for x in chunk)
        lines.append("%s%04x  %-47s  %s" % (indent, i, hx, asc))
    return "\n".join(lines)


def flags_str(f):
    names = [(F_M, "M(markers)"), (F_C, "C(crc)"), (F_R, "R(reject)"),
             (F_H, "H(enhanced,RFC6581)"), (F_G, "G(siw GSO_EXP)")]
    s = [n for bit, n in names if f & bit]
    if f & 0x07:
        s.append("res=0x%x" % (f & 0x07))
    return "|".join(s) or "none"


def ird_ord_str(ird, ordv):
    s = "IRD=%d ORD=%d" % (ird & 0x3FFF, ordv & 0x3FFF)
    if ird & 0x8000:
        s += " P2P"
    if ird & 0x4000:
        s += " ZERO_LEN_RTR"
    if ordv & 0x8000:
        s += " RTR=RDMA_WRITE"
    if ordv & 0x4000:
        s += " RTR=RDMA_READ"
    if ird & 0x8000 and not ordv & 0xC000:
        s += " RTR=SEND(none of W/R set)"
    return s


def recv_exact(s, n, timeout):
    s.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


RDMAP_OPS = {0: "RDMA Write", 1: "RDMA Read Request", 2: "RDMA Read Response",
             3: "Send", 4: "Send with Invalidate", 5: "Send with SE",
             6: "Send with SE and Invalidate", 7: "Terminate"}


def decode_fpdu(buf, crc_on):
    """Decode one FPDU from buf; return (text, consumed) or (None, 0)."""
    if len(buf) < 2:
        return None, 0
    ulpdu_len = struct.unpack(">H", buf[:2])[0]
    pad = (4 - ((2 + ulpdu_len) % 4)) % 4
    total = 2 + ulpdu_len + pad + 4
    if len(buf) < total:
        return None, 0
    fp = buf[:total]
    ctrl = struct.unpack(">H", fp[2:4])[0]
    tagged = bool(ctrl & 0x8000)
    last = bool(ctrl & 0x4000)
    dv = (ctrl >> 8) & 3
    rv = (ctrl >> 6) & 3
    op = ctrl & 0xF
    txt = ["FPDU len=%d ULPDU_len=%d pad=%d DDP[T=%d L=%d DV=%d] RDMAP[RV=%d op=%d %s]" % (
        total, ulpdu_len, pad, tagged, last, dv, rv, op, RDMAP_OPS.get(op, "?"))]
    if tagged:
        stag, to = struct.unpack(">IQ", fp[4:16])
        txt.append("  tagged: STag=0x%08x TO=0x%x payload=%d" % (stag, to, ulpdu_len - 14))
    else:
        rsvd, qn, msn, mo = struct.unpack(">IIII", fp[4:20])
        txt.append("  untagged: RDMAP-rsvd/inval-STag=0x%08x QN=%d MSN=%d MO=%d payload=%d" % (
            rsvd, qn, msn, mo, ulpdu_len - 18))
        if op == 7 and ulpdu_len >= 22:
            t = fp[20:24]
            txt.append("  terminate: layer=%d etype=%d ecode=0x%02x hdrct=0x%x" % (
                t[0] >> 4, t[0] & 0xF, t[1], t[2] >> 5))
        if op == 1 and ulpdu_len >= 18 + 28:
            sstag, sto, rdsz, srcstag, srcto = struct.unpack(">IQIIQ", fp[20:48])
            txt.append("  read req: sink STag=0x%08x TO=0x%x size=%d src STag=0x%08x TO=0x%x"
                       % (sstag, sto, rdsz, srcstag, srcto))
    # MPA CRC32c goes on the wire least-significant byte first (iSCSI style):
    # siw stores the crypto API's __le32 result; verified against siw.
    crc = struct.unpack("<I", fp[-4:])[0]
    calc = crc32c(fp[:-4])
    txt.append("  CRC field=0x%08x computed=0x%08x %s" % (
        crc, calc, ("OK" if crc == calc else "MISMATCH") if crc_on else "(CRC off; field %s)" % (
            "zero" if crc == 0 else "nonzero")))
    txt.append(hexdump(fp))
    return "\n".join(txt), total


def read_fpdus(s, hold, crc_on):
    """Read for `hold` seconds (or until close), then print decoded FPDUs."""
    buf = b""
    end = time.time() + hold
    s.settimeout(0.1)
    closed = False
    while time.time() < end:
        try:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            buf += d
        except socket.timeout:
            pass
        except ConnectionError as e:
            print("<- connection error: %s" % e)
            closed = True
            break
    while buf:
        txt, n = decode_fpdu(buf, crc_on)
        if not txt:
            print("<- %d trailing bytes:\n%s" % (len(buf), hexdump(buf)))
            break
        print("<- " + txt)
        buf = buf[n:]
    print("peer closed" if closed else "closing after %.1fs" % hold)


def listen_mode(a):
    """Passive side: accept one connection, decode its MPA Request, answer."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.host, a.port))
    ls.listen(1)
    ls.settimeout(a.accept_timeout)
    print("listening on %s:%d" % (a.host, a.port), flush=True)
    try:
        s, peer = ls.accept()
    except socket.timeout:
        print("no connection within %.0f s" % a.accept_timeout)
        return 3
    ls.close()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("connection from %s:%d" % peer)
    try:
        hdr = recv_exact(s, 20, a.timeout)
        key, rflags, rrev, pdlen = hdr[:16], hdr[16], hdr[17], struct.unpack(">H", hdr[18:20])[0]
        pd = recv_exact(s, pdlen, a.timeout) if pdlen else b""
    except (EOFError, socket.timeout, ConnectionError) as e:
        print("<- no complete MPA Request: %s" % e)
        return 3
    kind = "MPA Request" if key == KEY_REQ else "unknown key"
    print("<- %s key=%r rev=%d flags=0x%02x [%s] pd_len=%d" % (
        kind, key.decode("latin-1"), rrev, rflags, flags_str(rflags), pdlen))
    if rflags & F_H and pdlen >= 4:
        ird, ordv = struct.unpack(">HH", pd[:4])
        print("   private data IRD/ORD: 0x%04x 0x%04x  %s" % (ird, ordv, ird_ord_str(ird, ordv)))
        if pdlen > 4:
            print("   remaining private data: %s" % pd[4:].hex())
    elif pdlen:
        print("   private data: %s" % pd.hex())
    print(hexdump(hdr + pd), flush=True)
    if key != KEY_REQ or a.reply == "none":
        print("not answering; closing")
        s.close()
        return 0 if key == KEY_REQ else 1
    # answer with the requester's revision; CRC if it asked for it (RFC 5044 MUST);
    # with H, echo IRD/ORD as ORD/IRD (our IRD = its ORD and vice versa)
    flags = rflags & (F_C | F_H)
    rpd = b""
    if a.reply == "reject":
        flags |= F_R
    if flags & F_H and pdlen >= 4:
        ird, ordv = struct.unpack(">HH", pd[:4])
        rpd = struct.pack(">HH", ordv & 0x3FFF, ird & 0x3FFF)
    rep = KEY_REP + struct.pack(">BBH", flags, rrev, len(rpd)) + rpd
    print("-> MPA Reply rev=%d flags=0x%02x [%s] pd_len=%d" % (rrev, flags, flags_str(flags), len(rpd)))
    print(hexdump(rep), flush=True)
    s.sendall(rep)
    if a.reply == "accept":
        read_fpdus(s, a.hold, bool(flags & F_C))
    s.close()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", type=int)
    ap.add_argument("--host", default="127.0.0.1", help="loopback address only")
    ap.add_argument("--rev", type=int, default=2, choices=[0, 1, 2, 3])
    ap.add_argument("--crc", action="store_true", help="set C flag (request CRC)")
    ap.add_argument("--markers", action="store_true", help="set M flag (siw rejects)")
    ap.add_argument("--no-enhanced", action="store_true",
                    help="rev 2 without H flag / IRD-ORD private data")
    ap.add_argument("--ird", type=int, default=1)
    ap.add_argument("--ord", type=int, default=1)
    ap.add_argument("--p2p", action="store_true", help="set P2P bit (RFC 6581)")
    ap.add_argument("--p2p-rtr", choices=["write", "read", "none", "zero"], default="write",
                    help="RTR type offered with --p2p")
    ap.add_argument("--pd", default="", help="extra private data (hex) after IRD/ORD")
    ap.add_argument("--rtr", choices=["write", "read"], help="send an RTR FPDU after the reply")
    ap.add_argument("--corrupt-crc", action="store_true",
                    help="send the RTR FPDU with a wrong CRC (expect an MPA-layer Terminate)")
    ap.add_argument("--hold", type=float, default=0.5, help="seconds to read after reply")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--listen", action="store_true",
                    help="passive side: listen on --host:PORT and answer one MPA Request")
    ap.add_argument("--reply", choices=["accept", "reject", "none"], default="accept",
                    help="with --listen: how to answer the request (default accept)")
    ap.add_argument("--accept-timeout", type=float, default=60,
                    help="with --listen: give up if nobody connects within this many seconds")
    a = ap.parse_args()

    if not ipaddress.ip_address(a.host) in ipaddress.ip_network("127.0.0.0/8"):
        sys.exit("refusing non-loopback destination %s" % a.host)
    if a.listen:
        return listen_mode(a)

    flags = 0
    if a.markers:
        flags |= F_M
    if a.crc:
        flags |= F_C
    pd = b""
    if a.rev == 2 and not a.no_enhanced:
        flags |= F_H
        ird, ordv = a.ird & 0x3FFF, a.ord & 0x3FFF
        if a.p2p:
            ird |= 0x8000
            ordv |= {"write": 0x8000, "read": 0x4000, "none": 0, "zero": 0}[a.p2p_rtr]
            if a.p2p_rtr == "zero":
                ird |= 0x4000
        pd += struct.pack(">HH", ird, ordv)
    pd += bytes.fromhex(a.pd)
    req = KEY_REQ + struct.pack(">BBH", flags, a.rev, len(pd)) + pd

    print("connect %s:%d" % (a.host, a.port))
    s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("-> MPA Request rev=%d flags=0x%02x [%s] pd_len=%d" % (a.rev, flags, flags_str(flags), len(pd)))
    if a.rev == 2 and not a.no_enhanced:
        ird, ordv = struct.unpack(">HH", pd[:4])
        print("   private data IRD/ORD: 0x%04x 0x%04x  %s" % (ird, ordv, ird_ord_str(ird, ordv)))
    print(hexdump(req))
    s.sendall(req)
    try:
        hdr = recv_exact(s, 20, a.timeout)
    except (EOFError, socket.timeout, ConnectionError) as e:
        print("<- no MPA reply: %s" % e)
        return 3
    key, rflags, rrev, rpdlen = hdr[:16], hdr[16], hdr[17], struct.unpack(">H", hdr[18:20])[0]
    rpd = recv_exact(s, rpdlen, a.timeout) if rpdlen else b""
    kind = "MPA Reply" if key == KEY_REP else ("MPA Request?!" if key == KEY_REQ else "unknown key")
    print("<- %s key=%r rev=%d flags=0x%02x [%s] pd_len=%d" % (
        kind, key.decode("latin-1"), rrev, rflags, flags_str(rflags), rpdlen))
    if rflags & F_H and rpdlen >= 4:
        ird, ordv = struct.unpack(">HH", rpd[:4])
        print("   private data IRD/ORD: 0x%04x 0x%04x  %s" % (ird, ordv, ird_ord_str(ird, ordv)))
        if rpdlen > 4:
            print("   remaining private data: %s" % rpd[4:].hex())
    elif rpdlen:
        print("   private data: %s" % rpd.hex())
    print(hexdump(hdr + rpd))
    result = "REJECT" if rflags & F_R else "ACCEPT"
    crc_on = bool(rflags & F_C)
    print("=> %s (CRC %s)" % (result, "on" if crc_on else "off"))

    if a.rtr and result == "ACCEPT":
        if a.rtr == "write":
            # zero-length tagged RDMA Write: ctrl T|L|DV=1|RV=1|op 0, STag 0, TO 0
            ulpdu = struct.pack(">HIQ", 0xC140, 0, 0)
        else:
            # zero-length RDMA Read Request: untagged L, QN=1, MSN=1, MO=0 + read req body
            ulpdu = struct.pack(">HIIII", 0x4141, 0, 1, 1, 0) + struct.pack(">IQIIQ", 0, 0, 0, 0, 0)
        fp = struct.pack(">H", len(ulpdu)) + ulpdu
        fp += b"\0" * ((4 - len(fp) % 4) % 4)
        c = crc32c(fp) if crc_on else 0
        if a.corrupt_crc:
            c ^= 0xFFFFFFFF
        fp += struct.pack("<I", c)
        print("-> RTR FPDU (%s):" % a.rtr)
        print(hexdump(fp))
        s.sendall(fp)

    read_fpdus(s, a.hold, crc_on)
    s.close()
    return 0 if result == "ACCEPT" else 1


if __name__ == "__main__":
    sys.exit(main())
