"""Linux siw 6.1's split-trailer CRC bug (docs/interop.md, "Differences" section 2; excuse E1),
shared by interop/matrix and interop/nvmf: what siw prints for it, and what it reads as the CRC
of an FPDU whose trailer (pad + CRC) reaches it split across two TCP segments."""

import re

# siw's complaint: `siw: crc error. in: X, own Y, op N` (X what it read, Y what it computed,
# N the RDMAP opcode of the FPDU)
SIW_CRC_RE = re.compile(r"siw: crc error\. in: ([0-9a-f]+), own ([0-9a-f]+)(?:, op (\d+))?")

# RDMAP opcode numbers (RFC 5040 Figure 4, RFC 7306) by iwdump's names, as siw prints `op N`
RDMAP_OPCODES = {"Write": 0, "ReadRequest": 1, "ReadResponse": 2, "Send": 3, "SendInvalidate": 4,
                 "SendSe": 5, "SendSeInvalidate": 6, "Terminate": 7, "ImmediateData": 8,
                 "ImmediateDataSe": 9, "AtomicRequest": 10, "AtomicResponse": 11}


def trailer_len(f):
    """Bytes of FPDU f's trailer: pad to a 4-byte boundary, then the 4-byte CRC."""
    return (4 - (f["ulpdu_len"] + 2) % 4) % 4 + 4


def siw_trailer_reading(prev, f, head=None):
    """What siw 6.1 reads as the CRC of FPDU f when f's trailer (pad + CRC) is split across two
    segments, as its siw_get_trailer() does: the trailer is copied to the pad bytes in front of a
    fixed CRC field, and the second piece is copied there again instead of after the first, so
    the CRC field holds part of the second piece and, where nothing overwrote it, the previous
    FPDU's CRC (prev, the FPDU before f in the same direction). head: how many trailer bytes
    the first segment held (default f["trailer_head"], where the capture saw the split).
    Returns the bytes in the order siw prints them (`in: %08x` of a little-endian word), or None
    without the data to say."""
    pad = (4 - (f["ulpdu_len"] + 2) % 4) % 4
    t = bytes(pad) + bytes.fromhex(f["crc_wire"])           # the pad is zeros on our wire
    if head is None:
        head = f.get("trailer_head")
    if prev is None or head is None or not 0 < head < len(t):
        return None
    stale = bytes.fromhex(prev["crc_wire"])
    crc = bytearray(4)
    for j in range(4):
        if j < 4 - head:
            crc[j] = t[head + pad + j]       # the second piece, copied to the front again
        elif j + pad < head:
            crc[j] = t[j + pad]              # what is left of the first piece
        else:
            crc[j] = stale[j]                # the previous FPDU's CRC
    return bytes(reversed(crc)).hex()
