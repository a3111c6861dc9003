#!/usr/bin/env python3
"""Tests of interop/nvmf's own parsing and verdicts, on made-up guest outputs and dmesg lines:
a run passes only on complete evidence, and every kind of failure names itself. Needs no guest:
`python3 interop/test_nvmf.py` (run by .ci/run's interop stage with test_matrix.py)."""

import importlib.machinery
import importlib.util
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.realpath(__file__))
_loader = importlib.machinery.SourceFileLoader("nvmf", os.path.join(HERE, "nvmf"))
_spec = importlib.util.spec_from_loader("nvmf", _loader)
N = importlib.util.module_from_spec(_spec)
_loader.exec_module(N)

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64

GOOD_HOST = """== siw parameters: mpa_crc_required=Y
RESULT connect OK instance=0,cntlid=1, /dev/nvme0n1 67108864 bytes (0.39 s)
== namespace: 67108864 bytes, logical block 512 bytes
PATTERN pattern16 49283072 16777216 %s
RESULT write16 OK 16 MiB at 49283072, oflag=direct (1.44 s)
RESULT read16 OK iflag=direct (1.18 s)
RESULT compare16 OK sha256 %s
PATTERN small4k 66060288 4096 %s
RESULT small4k OK 4096 bytes at 66060288 written and read back (O_DIRECT)
PATTERN small512 66068480 512 %s
RESULT small512 OK 512 bytes at 66068480 written and read back (O_DIRECT)
RESULT mkfs OK ext2 of 48128 KiB (3.87 s)
RESULT fs-write OK 2 files copied, synced, unmounted
RESULT fs-read OK remounted, both files match
RESULT delete OK controller nvme0 gone (0.26 s)
== summary: 0 failed step(s)
""" % (SHA_A, SHA_A, SHA_B, SHA_C)

GOOD_DMESG = """[    7.025682] siw: loading out-of-tree module taints kernel.
[    7.026808] siw: module verification failed: signature and/or required key missing - tainting kernel
[   11.398256] nvmet: creating nvm controller 1 for subsystem nqn.2024-01.io.test:ram0 for NQN nqn.2014-08.org.nvmexpress:uuid:2121728f.
[   11.460436] nvme nvme0: creating 2 I/O queues.
[   11.545159] nvme nvme0: mapped 2/0/0 default/read/poll queues.
[   11.561318] nvme nvme0: new ctrl: NQN "nqn.2024-01.io.test:ram0", addr 10.0.2.15:4420
[   23.106201] EXT4-fs (nvme0n1): mounting ext2 file system using the ext4 subsystem
[   23.166542] EXT4-fs (nvme0n1): mounted filesystem without journal. Quota mode: none.
[   24.153920] EXT4-fs (nvme0n1): unmounting filesystem.
[   25.595690] nvme nvme0: Removing ctrl: NQN "nqn.2024-01.io.test:ram0"
"""


def all_ok(patterns):
    return [(n, True, "ok") for n in sorted(patterns)]


class Parsing(unittest.TestCase):
    def test_results_and_patterns_are_read_from_noisy_output(self):
        r = N.parse_results(GOOD_HOST + "RESULT small512 SKIP the namespace's logical block is 4096 bytes\n"
                            "  RESULT with leading blanks OK\nRESULTS foo OK\n")
        self.assertEqual(r[0], ("connect", "OK", "instance=0,cntlid=1, /dev/nvme0n1 67108864 bytes (0.39 s)"))
        self.assertIn(("small512", "SKIP", "the namespace's logical block is 4096 bytes"), r)
        self.assertNotIn("RESULTS", [s for s, _st, _d in r])
        p = N.parse_patterns(GOOD_HOST)
        self.assertEqual(p["pattern16"], (49283072, 16777216, SHA_A))
        self.assertEqual(set(p), {"pattern16", "small4k", "small512"})
        self.assertEqual(N.parse_patterns(GOOD_HOST, "BACKING"), {})

    def test_a_pattern_line_with_a_short_hash_is_not_a_pattern(self):
        self.assertEqual(N.parse_patterns("PATTERN x 0 4096 abcd\n"), {})

    def test_the_backing_file_comes_from_the_target_command(self):
        self.assertEqual(N.target_cmd_file("target/release/iwnvme target --listen 127.0.0.1:4420 --nqn q "
                                           "--file /tmp/disk.img --size 64M"), "/tmp/disk.img")
        self.assertEqual(N.target_cmd_file("iwnvme target --file='/tmp/a b.img'"), "/tmp/a b.img")
        self.assertIsNone(N.target_cmd_file("iwnvme target --memory 64M"))
        self.assertIsNone(N.target_cmd_file("iwnvme target --file"))
        self.assertIsNone(N.target_cmd_file("unbalanced 'quote"))
        f = N.target_cmd_file("iwnvme target --listen $NVMF_ADDR:$NVMF_PORT --file ${TMPDIR}/d$NVMF_PORT.img")
        self.assertEqual(N.expand_vars(f, {"TMPDIR": "/tmp", "NVMF_PORT": "4420"}), "/tmp/d4420.img")
        self.assertIsNone(N.expand_vars(None, {}))

    def test_the_nvme_cm_request_is_32_little_endian_bytes(self):
        h = N.nvme_cm_request_hex()
        self.assertEqual(len(h), 64)
        self.assertEqual(h[:16], "0000000020001f00")
        self.assertEqual(N.nvme_cm_request_hex(qid=1, hrqsize=128, hsqsize=127)[:16], "0000010080007f00")

    def test_controllers_are_counted_for_the_subsystem_only(self):
        d = GOOD_DMESG + "[ 12.0] nvmet: creating nvm controller 2 for subsystem nqn.other for NQN h.\n"
        self.assertEqual(N.controllers_created(d, "nqn.2024-01.io.test:ram0"), 1)
        self.assertEqual(N.controllers_created(d, "nqn.2024-01.io.test:ram"), 0)


class Dmesg(unittest.TestCase):
    def test_a_clean_run_has_no_problems(self):
        self.assertEqual(N.dmesg_problems(GOOD_DMESG), [])

    def test_errors_of_every_layer_are_caught(self):
        bad = ["[ 74.7] nvme nvme0: I/O 0 QID 0 timeout",
               "[ 74.7] nvme nvme0: Connect command failed, error wo/DNR bit: 881",
               "[ 11.4] nvme nvme0: rdma connection establishment failed (-111)",
               "[ 30.1] nvme nvme0: Reconnecting in 10 seconds...",
               "[ 30.1] nvme_rdma: Bogus remote invalidation for rkey 0x1234",
               "[ 30.2] siw0: QP[2]: terminate: layer 1, type 3, code 0",
               "[ 30.3] blk_update_request: I/O error, dev nvme0n1, sector 0 op 0x1:(WRITE)",
               "[ 30.4] Buffer I/O error on dev nvme0n1, logical block 0, lost async page write",
               "[ 30.5] EXT4-fs error (device nvme0n1): ext4_find_entry:1658: inode #2: comm ls: reading "
               "directory lblock 0",
               "[ 30.6] WARNING: CPU: 1 PID: 42 at drivers/infiniband/sw/siw/siw_qp.c:123 siw_qp_modify",
               "[ 30.7] Call Trace:",
               "[ 30.8] BUG: kernel NULL pointer dereference, address: 0000000000000000",
               "[ 30.9] nvmet_rdma: received IB QP event: QP fatal error (1)",
               "[ 31.0] iw_cm: cm_id 000000001234 rejected"]
        got = N.dmesg_problems(GOOD_DMESG + "\n".join(bad) + "\n")
        self.assertEqual(got, [b.strip() for b in bad])

    def test_allowed_lines_are_not_problems(self):
        d = GOOD_DMESG + "[ 9.0] nvmet_rdma: disconnect received\n"
        self.assertEqual(len(N.dmesg_problems(d)), 1)
        self.assertEqual(N.dmesg_problems(d, [r"nvmet_rdma: disconnect"]), [])


class Backing(unittest.TestCase):
    def test_the_backing_file_is_read_at_the_guests_offsets(self):
        with tempfile.NamedTemporaryFile() as f:
            data = os.urandom(16384)
            f.write(data)
            f.flush()
            import hashlib
            want = hashlib.sha256(data[4096:8192]).hexdigest()
            pats = {"p": (4096, 4096, want), "wrong": (0, 4096, want), "short": (12288, 8192, want)}
            got = {n: (ok, d) for n, ok, d in N.backing_check(pats, lambda o, n: N.file_sha256(f.name, o, n))}
            self.assertTrue(got["p"][0])
            self.assertFalse(got["wrong"][0])
            self.assertIn("the guest wrote", got["wrong"][1])
            self.assertFalse(got["short"][0])
            self.assertIn("only 4096 of 8192", got["short"][1])

    def test_an_unreadable_backing_file_fails(self):
        pats = {"p": (0, 512, SHA_A)}
        r = N.backing_check(pats, lambda o, n: N.file_sha256("/nonexistent/disk.img", o, n))
        self.assertFalse(r[0][1])
        self.assertIn("cannot read", r[0][2])

    def test_loopback_reports_are_matched_by_place(self):
        reported = N.parse_patterns(GOOD_HOST.replace("PATTERN", "BACKING"), "BACKING")
        r = N.backing_check(N.parse_patterns(GOOD_HOST), N.reported_reader(reported))
        self.assertTrue(all(ok for _n, ok, _d in r))
        reported["small4k"] = (66060288, 4096, SHA_A)
        r = dict((n, ok) for n, ok, _d in N.backing_check(N.parse_patterns(GOOD_HOST), N.reported_reader(reported)))
        self.assertFalse(r["small4k"])
        del reported["small512"]
        r = N.backing_check(N.parse_patterns(GOOD_HOST), N.reported_reader(reported))
        self.assertIn("reported nothing", [d for n, _ok, d in r if n == "small512"][0])


class KernelHostVerdict(unittest.TestCase):
    def verdict(self, out=GOOD_HOST, rc=0, dmesg=GOOD_DMESG, backing=None, target_problem=None, skipped=None):
        res, pats = N.parse_results(out), N.parse_patterns(out)
        return N.verdict_kernel_host(res, rc, pats, all_ok(pats) if backing is None else backing,
                                     N.dmesg_problems(dmesg), target_problem, skipped)

    def test_a_complete_clean_run_passes(self):
        self.assertEqual(self.verdict(), (True, []))

    def test_a_skipped_512_byte_write_on_a_4k_namespace_passes(self):
        out = GOOD_HOST.replace("PATTERN small512 66068480 512 %s\n" % SHA_C, "").replace(
            "RESULT small512 OK 512 bytes at 66068480 written and read back (O_DIRECT)",
            "RESULT small512 SKIP the namespace's logical block is 4096 bytes")
        self.assertEqual(self.verdict(out), (True, []))

    def test_a_refused_connect_fails_with_the_reason(self):
        out = "RESULT connect FAIL write to /dev/nvme-fabrics failed: Connection refused (0.15 s)\n"
        d = GOOD_DMESG + "[ 11.4] nvme nvme0: rdma connection establishment failed (-111)\n"
        ok, why = self.verdict(out, rc=1, dmesg=d)
        self.assertFalse(ok)
        self.assertIn("Connection refused", why[0])
        self.assertTrue(any("establishment failed" in w for w in why))

    def test_a_guest_that_never_ran_fails(self):
        ok, why = self.verdict("siw-peer: guest produced no exit status\n", rc=125)
        self.assertFalse(ok)
        self.assertIn("no result for the connect step (the guest stopped in it or before)", why)
        self.assertIn("guest exit status 125", why)

    def test_a_guest_cut_short_after_connect_fails(self):
        out = GOOD_HOST.split("RESULT mkfs")[0]
        ok, why = self.verdict(out, rc=124)
        self.assertFalse(ok)
        self.assertTrue(any("missing: mkfs fs-write fs-read delete" in w for w in why), why)

    def test_a_failed_step_fails(self):
        out = GOOD_HOST.replace("RESULT compare16 OK sha256 %s" % SHA_A, "RESULT compare16 FAIL /tmp/pat /tmp/back "
                                "differ: char 4097, line 1")
        ok, why = self.verdict(out, rc=1)
        self.assertFalse(ok)
        self.assertEqual(why, ["guest step compare16 failed: /tmp/pat /tmp/back differ: char 4097, line 1"])

    def test_a_backing_mismatch_fails_even_if_the_guest_read_its_data_back(self):
        ok, why = self.verdict(backing=[("pattern16", False, "backing file at 0: sha256 x, the guest wrote y"),
                                        ("small4k", True, "")])
        self.assertFalse(ok)
        self.assertIn("backing pattern16", why[0])

    def test_a_backing_check_is_required_unless_skipped_with_a_reason(self):
        ok, why = self.verdict(backing=[])
        self.assertEqual((ok, why), (False, ["no backing check"]))
        self.assertEqual(self.verdict(backing=[], skipped="no --backing")[0], True)

    def test_a_dmesg_error_fails_a_run_whose_steps_all_passed(self):
        ok, why = self.verdict(dmesg=GOOD_DMESG + "[ 20.0] nvme nvme0: I/O 12 QID 1 timeout, reset controller\n")
        self.assertFalse(ok)
        self.assertEqual(why, ["dmesg: [ 20.0] nvme nvme0: I/O 12 QID 1 timeout, reset controller"])

    def test_many_dmesg_errors_are_summarised(self):
        d = GOOD_DMESG + "".join("[ %d.0] nvme nvme0: I/O %d QID 1 timeout\n" % (i, i) for i in range(9))
        ok, why = self.verdict(dmesg=d)
        self.assertEqual(len(why), 6)
        self.assertEqual(why[-1], "dmesg: 4 more error lines")

    def test_a_target_that_died_fails(self):
        ok, why = self.verdict(target_problem="the target command exited during the run (status -11)")
        self.assertEqual((ok, why), (False, ["the target command exited during the run (status -11)"]))

    def test_a_too_small_namespace_fails_by_its_size(self):
        out = ("RESULT connect OK instance=0,cntlid=1, /dev/nvme0n1 16777216 bytes (0.3 s)\n"
               "RESULT size FAIL namespace of 16777216 bytes, this test needs 41943040\n"
               "RESULT delete OK controller nvme0 gone (0.2 s)\n")
        ok, why = self.verdict(out, rc=1, backing=[])
        self.assertFalse(ok)
        self.assertEqual(why, ["guest step size failed: namespace of 16777216 bytes, this test needs 41943040"])


PROBE_ACCEPT = """connect 127.0.0.1:24430
-> MPA Request rev=2 flags=0x50 [C(crc)|H(enhanced,RFC6581)] pd_len=36
<- MPA Reply key='MPA ID Rep Frame' rev=2 flags=0x50 [C(crc)|H(enhanced,RFC6581)] pd_len=36
   private data IRD/ORD: 0x0010 0x0010  IRD=16 ORD=16
   remaining private data: 0000200000000000000000000000000000000000000000000000000000000000
=> ACCEPT (CRC on)
closing after 1.0s
"""

GOOD_TARGET = """RESULT target OK subsystem q, namespace 1 = /dev/ram0, nvmet-rdma port 1 on 10.0.2.15:4420 (0.08 s)
RESULT ramdisk-pattern16 OK /dev/ram0 holds 16777216 bytes at 8388608, sha256 %s
RESULT target-teardown OK
== summary: 0 failed step(s)
""" % SHA_A


class KernelTargetVerdict(unittest.TestCase):
    def test_an_initiator_run_passes_on_its_status_the_ramdisk_and_a_controller(self):
        r = N.parse_results(GOOD_TARGET)
        self.assertEqual(N.verdict_kernel_target(r, 0, [], initiator_rc=0, controllers=1), (True, []))
        ok, why = N.verdict_kernel_target(r, 0, [], initiator_rc=1, controllers=1)
        self.assertEqual(why, ["initiator command exit status 1"])
        ok, why = N.verdict_kernel_target(r, 0, [], initiator_rc=0, controllers=0)
        self.assertFalse(ok)
        self.assertIn("created no controller", why[0])

    def test_a_ramdisk_without_the_pattern_fails(self):
        out = GOOD_TARGET.replace("RESULT ramdisk-pattern16 OK /dev/ram0 holds 16777216 bytes at 8388608, sha256 %s"
                                  % SHA_A, "RESULT ramdisk-pattern16 FAIL /dev/ram0 at 8388608: sha256 %s, want %s"
                                  % (SHA_B, SHA_A))
        ok, why = N.verdict_kernel_target(N.parse_results(out), 1, [], initiator_rc=0, controllers=1)
        self.assertFalse(ok)
        self.assertEqual(len(why), 1)
        self.assertIn("ramdisk-pattern16 failed", why[0])

    def test_a_guest_that_checked_nothing_fails(self):
        out = "RESULT target OK x\nRESULT host-done FAIL no word from the host within 300 s\n"
        ok, why = N.verdict_kernel_target(N.parse_results(out), 1, [], initiator_rc=0, controllers=1)
        self.assertFalse(ok)
        self.assertIn("the guest checked no pattern on its RAM disk", why)

    def test_a_target_that_never_came_up_fails(self):
        ok, why = N.verdict_kernel_target([], 125, [], initiator_rc=0, controllers=0)
        self.assertIn("the guest target never came up", why)

    def test_the_port_path_check_wants_an_accepting_reply_with_the_crc_asked_for(self):
        r = N.parse_results("RESULT target OK x\nRESULT target-teardown OK\n")
        self.assertEqual(N.verdict_kernel_target(r, 0, [], probe=PROBE_ACCEPT, expect_pattern=False, crc=True),
                         (True, []))
        ok, why = N.verdict_kernel_target(r, 0, [], probe=PROBE_ACCEPT, expect_pattern=False, crc=False)
        self.assertEqual(why, ["MPA Reply has CRC on, wanted off"])
        rej = PROBE_ACCEPT.replace("=> ACCEPT", "=> REJECT")
        self.assertEqual(N.verdict_kernel_target(r, 0, [], probe=rej, expect_pattern=False)[1],
                         ["the guest rejected the MPA Request"])
        none = "connect 127.0.0.1:24430\n<- no MPA reply: peer closed\n"
        self.assertEqual(N.verdict_kernel_target(r, 0, [], probe=none, expect_pattern=False)[1],
                         ["no MPA Reply from the guest (peer closed)"])


def pcap(packets, link=1):
    """A little-endian pcap of IPv4/TCP packets [(sport, dport, payload)]."""
    import struct
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, link)
    for sp, dp, pay in packets:
        tcp = struct.pack(">HHIIBBHHH", sp, dp, 1, 1, 8 << 4, 0x18, 65535, 0, 0) + b"\x01\x01\x08\x0a" + bytes(8)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(pay), 0, 0, 64, 6, 0, bytes(4), bytes(4))
        l2 = bytes(12) + b"\x08\x00" if link == 1 else bytes(14) + b"\x08\x00"
        frame = l2 + ip + tcp + pay
        out += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    return out


def mpa(kind, flags, pd=b""):
    key = b"MPA ID Req Frame" if kind == "Request" else b"MPA ID Rep Frame"
    import struct
    return key + struct.pack(">BBH", flags, 2, len(pd)) + pd


class MpaCapture(unittest.TestCase):
    def test_mpa_frames_are_found_with_their_flags(self):
        for link in (1, 113):
            data = pcap([(40000, 4420, mpa("Request", 0x50, bytes(36))), (4420, 40000, mpa("Reply", 0x50, bytes(36))),
                         (40000, 4420, b"\x00\x52" + bytes(80)), (40001, 4420, mpa("Request", 0x10))], link)
            self.assertEqual(N.mpa_frames(data), [("Request", 0x50, 40000, 4420), ("Reply", 0x50, 4420, 40000),
                                                  ("Request", 0x10, 40001, 4420)], link)
        self.assertEqual(N.mpa_frames(b""), [])
        self.assertEqual(N.mpa_frames(pcap([(1, 2, b"MPA ID Rep Fr")])), [])

    def test_the_replies_must_have_the_crc_asked_for(self):
        on = [("Request", 0x50, 1, 4420), ("Reply", 0x50, 4420, 1)]
        off = [("Request", 0x10, 1, 4420), ("Reply", 0x10, 4420, 1)]
        self.assertIsNone(N.mpa_crc_problem(on, True))
        self.assertIsNone(N.mpa_crc_problem(off, False))
        self.assertIn("1 of 1 MPA Replies have CRC off, --crc on", N.mpa_crc_problem(off, True))
        self.assertIn("have CRC on, --crc off", N.mpa_crc_problem(on, False))
        self.assertEqual(N.mpa_crc_problem(on[:1], True), "no MPA Reply in the guest's capture")
        self.assertEqual(N.mpa_summary(on + off), "2 Requests (1 with C), 2 Replies (1 with C)")
        self.assertEqual(N.mpa_summary([]), "no MPA frames captured")

    def test_a_target_run_whose_initiator_did_not_ask_for_crc_fails_under_crc_on(self):
        r = N.parse_results(GOOD_TARGET)
        off = [("Request", 0x10, 1, 4420), ("Reply", 0x10, 4420, 1)]
        ok, why = N.verdict_kernel_target(r, 0, [], initiator_rc=0, controllers=1, crc=True, mpa=off)
        self.assertFalse(ok)
        self.assertIn("the initiator must ask for CRC", why[0])
        self.assertEqual(N.verdict_kernel_target(r, 0, [], initiator_rc=0, controllers=1, crc=False, mpa=off),
                         (True, []))


# siw's split-trailer bug (E1) as seen in a real kernel-host run (dmesg, our Write's CRC),
# with made-up neighbours: our Write's trailer (no pad) split after 3 bytes reads as 16f02b68
# when the previous FPDU's CRC ended in 16.
E1_DMESG = GOOD_DMESG.replace("[   23.106201]", """[   19.572789] siw: crc error. in: 16f02b68, own 68f02bdf, op 0
[   19.583200] nvme nvme0: RECV for CQE 0x000000002e11bd73 failed with status WR flushed (5)
[   19.583430] nvme nvme0: starting error recovery
[   19.593994] nvme0n1: I/O Cmd(0x2) @ LBA 3554, 256 blocks, I/O Error (sct 0x3 / sc 0x71) 
[   19.594106] I/O error, dev nvme0n1, sector 3554 op 0x0:(READ) flags 0x80700 phys_seg 3 prio class 2
[   19.613974] nvme nvme0: Reconnecting in 10 seconds...
[   29.709113] nvme nvme0: creating 2 I/O queues.
[   29.779205] nvme nvme0: Successfully reconnected (1 attempts)
[   23.106201]""")


def fpdu(frame, crc_wire, opcode="Write", ulpdu_len=4094, d="s>c", conn=2, crc="good"):
    return {"type": "fpdu", "connection": conn, "frame": frame, "last_frame": frame + 2, "dir": d,
            "opcode": opcode, "ulpdu_len": ulpdu_len, "crc": crc, "crc_wire": crc_wire, "trailer_frame": frame + 2,
            "trailer_head": 8}


def e1_fpdus(**kw):
    return [fpdu(10, "11111111", "Send", 22, d="c>s"), fpdu(11, "0a0b0c16"), fpdu(14, "df2bf068", **kw),
            fpdu(17, "12345678", "Send", 22)]


class SplitTrailerE1(unittest.TestCase):
    def test_a_matching_reading_is_excused(self):
        excuse, lines = N.e1_evidence(E1_DMESG, e1_fpdus(), "s>c", [], [])
        self.assertIn("siw split-trailer CRC bug (E1", excuse)
        self.assertIn("our Write FPDU (conn 2, frames 14-16, CRC df2bf068 good by iwdump)", excuse)
        self.assertIn("split after 3 of 4 bytes reads as 16f02b68", excuse)
        self.assertTrue(any("matches our Write FPDU conn 2 frames 14-16" in x for x in lines))
        self.assertTrue(lines[-1].startswith("E1: "))

    def test_the_previous_fpdu_is_the_one_before_on_the_same_connection_and_direction(self):
        fs = e1_fpdus()
        fs.insert(2, fpdu(12, "0a0b0c99", conn=3))       # another queue: not what siw had seen
        fs.insert(2, fpdu(13, "0a0b0c98", d="c>s"))      # the other direction
        self.assertIsNotNone(N.e1_evidence(E1_DMESG, fs, "s>c", [], [])[0])
        fs = e1_fpdus()
        fs[1]["crc_wire"] = "0a0b0c17"
        self.assertIsNone(N.e1_evidence(E1_DMESG, fs, "s>c", [], [])[0])

    def test_a_reading_no_fpdu_of_ours_gives_is_refused(self):
        excuse, lines = N.e1_evidence(E1_DMESG.replace("in: 16f02b68", "in: 16f02b69"), e1_fpdus(), "s>c", [], [])
        self.assertIsNone(excuse)
        self.assertIn("no FPDU we sent reads as 16f02b69", lines[-1])

    def test_another_opcode_is_refused(self):
        self.assertIsNone(N.e1_evidence(E1_DMESG.replace("op 0", "op 3"), e1_fpdus(), "s>c", [], [])[0])

    def test_a_bad_crc_by_iwdump_is_refused(self):
        excuse, lines = N.e1_evidence(E1_DMESG, e1_fpdus(crc="bad"), "s>c", [], [])
        self.assertIsNone(excuse)
        fs = e1_fpdus()
        fs[-1]["crc"] = "bad"                             # any FPDU of ours: our CRC would be wrong
        excuse, lines = N.e1_evidence(E1_DMESG, fs, "s>c", [], [])
        self.assertIsNone(excuse)
        self.assertIn("our Send FPDU conn 2 frame 17 has CRC bad by iwdump", lines[-1])

    def test_an_extra_unrelated_dmesg_error_is_refused(self):
        for extra in ("[   20.1] nvme nvme0: I/O tag 3 (1003) opcode 0x1 (I/O Cmd) QID 1 timeout",
                      "[   20.1] EXT4-fs error (device nvme0n1): ext4_find_entry:1", "[   20.1] Call Trace:",
                      "[   20.1] nvme0n1: I/O Cmd(0x1) @ LBA 1, 8 blocks, I/O Error (sct 0x3 / sc 0x71) DNR ",
                      "[   20.1] nvme nvme0: RECV for CQE 0x00000000aa failed with status local protection error (4)"):
            dm = E1_DMESG.replace("[   19.613974]", extra + "\n[   19.613974]")
            excuse, lines = N.e1_evidence(dm, e1_fpdus(), "s>c", [], [])
            self.assertIsNone(excuse, extra)
            self.assertIn("dmesg line not part of the recovery", lines[-1])

    def test_the_send_siw_was_transmitting_when_it_dropped_the_queue_is_recovery(self):
        # as in CI: siw's transmit path fails the in-flight SEND with "local QP operation error"
        line = "[   19.572900] nvme nvme0: SEND for CQE 0x000000001a786fd0 failed with status local QP operation error (2)"
        dm = E1_DMESG.replace("[   19.583200]", line + "\n[   19.583200]")
        excuse, lines = N.e1_evidence(dm, e1_fpdus(), "s>c", [], [])
        self.assertIsNotNone(excuse, lines)
        self.assertIn("other dmesg error lines: 7, all the host's recovery: yes", lines)
        # the same line before siw's crc error is not a consequence of it
        dm = E1_DMESG.replace("[   19.572789] siw: crc error", line.replace("19.572900", "19.5") +
                              "\n[   19.572789] siw: crc error")
        excuse, lines = N.e1_evidence(dm, e1_fpdus(), "s>c", [], [])
        self.assertIsNone(excuse)
        self.assertIn("dmesg line before siw's crc error: nvme nvme0: SEND for CQE", lines[-1])

    def test_recovery_before_the_crc_error_or_without_a_reconnect_is_refused(self):
        dm = E1_DMESG.replace("[   19.572789] siw: crc error", "[   19.5] nvme nvme0: starting error recovery\n"
                                                                  "[   19.572789] siw: crc error")
        self.assertIsNone(N.e1_evidence(dm, e1_fpdus(), "s>c", [], [])[0])
        dm = E1_DMESG.replace("[   29.779205] nvme nvme0: Successfully reconnected (1 attempts)\n", "")
        excuse, lines = N.e1_evidence(dm, e1_fpdus(), "s>c", [], [])
        self.assertIsNone(excuse)
        self.assertIn("no successful reconnect", lines[-1])

    def test_a_failed_data_check_is_refused(self):
        excuse, lines = N.e1_evidence(E1_DMESG, e1_fpdus(), "s>c", [], ["backing pattern16: sha256 differs"])
        self.assertIsNone(excuse)
        self.assertIn("run problem: backing pattern16", lines[-1])

    def test_an_incomplete_capture_is_refused(self):
        excuse, _ = N.e1_evidence(E1_DMESG, e1_fpdus(), "s>c", ["tcpdump dropped 3 packets"], [])
        self.assertIsNone(excuse)

    def test_our_stream_may_end_inside_an_fpdu_only_where_siw_dropped_the_connection(self):
        cut = {"type": "problem", "connection": 2, "frame": 20, "dir": "s>c",
               "message": "the capture ends inside an FPDU (started at stream byte 935372)"}
        conns = {2: {"connection": 2, "fin_c2s": 22, "rst_c2s": 23}, 3: {"connection": 3}}
        excuse, lines = N.e1_evidence(E1_DMESG, e1_fpdus(), "s>c", [cut], [], conns=conns)
        self.assertIsNotNone(excuse)
        self.assertTrue(any("siw dropped that connection (FIN frame 22, RST frame 23)" in x for x in lines))
        for bad_cut, bad_conns in ((dict(cut, connection=3), {2: conns[2], 3: {"fin_c2s": 22}}),  # another one
                                   (dict(cut, frame=15), conns),                  # before the bad FPDU ended
                                   (cut, {2: {"fin_s2c": 22}}),                   # siw did not close it
                                   (cut, None)):
            excuse, lines = N.e1_evidence(E1_DMESG, e1_fpdus(), "s>c", [bad_cut], [], conns=bad_conns)
            self.assertIsNone(excuse, (bad_cut, bad_conns))
            self.assertIn("capture incomplete: conn", lines[-1])

    def test_no_crc_error_no_evidence(self):
        self.assertEqual(N.e1_evidence(GOOD_DMESG, e1_fpdus(), "s>c", [], []), (None, []))

    def test_kernel_target_allows_nothing_but_the_crc_error(self):
        only = "\n".join(x for x in E1_DMESG.splitlines() if "nvme" not in x or "siw" in x)
        fs = [dict(f, dir="c>s" if f["dir"] == "s>c" else "s>c") for f in e1_fpdus()]
        self.assertIsNotNone(N.e1_evidence(only, fs, "c>s", [], [], (), N.KERNEL_TARGET_RECOVERY, False)[0])
        self.assertIsNone(N.e1_evidence(E1_DMESG, fs, "c>s", [], [], (), N.KERNEL_TARGET_RECOVERY, False)[0])

    def test_iwdump_output_is_read(self):
        js = "\n".join(N.json.dumps(r) for r in [{"type": "connection", "connection": 1}] + e1_fpdus() +
                       [{"type": "problem", "connection": 1, "dir": "s>c", "message": "TCP data missing after "
                                                                                     "stream byte 5; decoding stops"},
                        {"type": "problem", "connection": 1, "dir": "s>c", "message": "reserved bits set"},
                        {"type": "problem", "connection": 1, "dir": "s>c", "frame": 7,
                         "message": "the capture ends inside an FPDU (started at stream byte 5)"}])
        conns, fs, probs = N.iwdump_parse(js + "\nnot json\n", "x\n  !! s>c frame 9: 12 bytes in 1 runs were not "
                                                               "captured (snap length)\n")
        self.assertEqual(list(conns), [1])
        self.assertEqual(len(fs), 4)
        self.assertEqual(len(probs), 3)
        self.assertIn("TCP data missing", probs[0])
        self.assertEqual(probs[1]["frame"], 7)


class E1Retry(unittest.TestCase):
    def run_with(self, outcomes):
        runs = iter(outcomes)
        a = N.argparse.Namespace(port=1, port_was_free=False)
        log = []
        old = N.log
        N.log = log.append
        try:
            rc = N.with_e1_retry("kernel-host", a, lambda _a: next(runs))
        finally:
            N.log = old
        return rc, log[-1]

    def test_a_clean_retry_passes_naming_the_first_run(self):
        rc, last = self.run_with([N.outcome(False, ["dmesg: x"], "", "E1 here"), N.outcome(True, [], " (ok)")])
        self.assertEqual(rc, 0)
        self.assertEqual(last, "NVMF kernel-host PASS (ok) (on a retry; the first run failed by E1: E1 here)")

    def test_e1_twice_is_known(self):
        rc, last = self.run_with([N.outcome(False, ["x"], "", "E1 one"), N.outcome(False, ["y"], "", "E1 two")])
        self.assertEqual(rc, 0)
        self.assertTrue(last.startswith("NVMF kernel-host KNOWN: siw bug E1"), last)
        self.assertIn("first run: E1 one; retry: E1 two", last)

    def test_anything_else_fails(self):
        rc, last = self.run_with([N.outcome(False, ["x"], "", "E1 one"),
                                  N.outcome(False, ["guest step read16 failed"])])
        self.assertEqual(rc, 1)
        self.assertIn("FAIL: retry after E1 (E1 one) failed: guest step read16 failed", last)
        rc, last = self.run_with([N.outcome(False, ["dmesg: siw: crc error"])])
        self.assertEqual((rc, last), (1, "NVMF kernel-host FAIL: dmesg: siw: crc error"))


def ts_frame(n, length, body=""):
    """One frame of tshark's -O iwarp_mpa output (made up, in tshark 4.0's layout)."""
    return ("Frame %d: %d bytes on wire (%d bits), %d bytes captured (%d bits)\n"
            "Ethernet II, Src: 00:00:00_00:00:00 (00:00:00:00:00:00), Dst: 00:00:00_00:00:00 (00:00:00:00:00:00)\n"
            "Internet Protocol Version 4, Src: 127.0.0.1, Dst: 127.0.0.1\n"
            "Transmission Control Protocol, Src Port: 59298, Dst Port: 55533, Seq: 1, Ack: 1, Len: %d\n%s\n"
            % (n, length + 66, 8 * (length + 66), length + 66, 8 * (length + 66), length, body))


def ts_fpdu(ulpdu, crc=None, good=True, data=None):
    t = "iWARP Marker Protocol data unit Aligned framing\n    FPDU\n        ULPDU length: %d bytes\n" % ulpdu
    if crc:
        t += "        CRC check: 0x%s (%s)\n" % (crc, "Good CRC32" if good else "Bad CRC32, should be 0x00000000")
    t += "iWARP Direct Data Placement and Remote Direct Memory Access Protocol\n"
    if data:
        t += "Data (%d bytes)\n" % data
    return t


TS_MPA = "iWARP Marker Protocol data unit Aligned framing\n    MPA Request Frame\n"
TS_EXPERT = """
Warns (2)
=============
   Frequency      Group           Protocol  Summary
           1    Request          IWARP_MPA  Res field is NOT set to zero as required by RFC 5044
           1   Sequence                TCP  D-SACK Sequence

Chats (1)
=============
   Frequency      Group           Protocol  Summary
           1   Sequence                TCP  Connection establish request (SYN): server port 55533
"""


def ts_output(crc=True, bad=False, malformed=False, undecoded=False, error=False):
    c = (lambda x: x) if crc else (lambda x: None)
    out = ts_frame(1, 0) + ts_frame(4, 28, TS_MPA) + ts_frame(5, 28, TS_MPA.replace("Request", "Reply"))
    out += ts_frame(8, 88, ts_fpdu(82, c("bd35a20d"), data=64))
    out += ts_frame(9, 1452)      # the first segment of frame 10's FPDU
    out += ts_frame(10, 4, "[2 Reassembled TCP Segments (1456 bytes): #9(1452), #10(4)]\n" +
                    ts_fpdu(1450, c("b1efc005"), good=not bad, data=1436))
    out += ts_frame(11, 52, ts_fpdu(46, c("5b32b64d")) + ("[Malformed Packet: IWARP_MPA]\n" if malformed else ""))
    if undecoded:
        out += ts_frame(12, 40, "Data (40 bytes)\n")
    out += ts_frame(13, 0)
    expert = TS_EXPERT
    if error:
        expert = "\nErrors (1)\n=============\n   Frequency      Group           Protocol  Summary\n" \
                 "           1  Malformed          IWARP_MPA  Malformed Packet (Exception occurred)\n" + expert
    return out + expert


TS_LENS = {8: 82, 10: 1450, 11: 46}


def iw_fpdus(frames, crc="good"):
    return [{"type": "fpdu", "last_frame": f, "crc": crc, "crc_wire": "00000000", "ulpdu_len": TS_LENS.get(f, 100)}
            for f in frames]


class Tshark(unittest.TestCase):
    """tshark's reading of our side's capture: every FPDU iwdump finds decoded as iWARP, CRC
    good when on, no malformed frame, no dissector error."""

    def verdict(self, text, crc_on, frames=(8, 10, 11), retrans=(), iw_crc="good"):
        t = N.tshark_iwarp.parse(text)
        return N.tshark_verdict(t, crc_on, iw_fpdus(frames, iw_crc if crc_on else "off"), set(retrans))

    def test_parse(self):
        t = N.tshark_iwarp.parse(ts_output())
        self.assertEqual(t["fpdu_frames"], [8, 10, 11])
        self.assertEqual(t["fpdu_lens"], [82, 1450, 46])
        self.assertEqual([f for f, _ in t["good"]], [8, 10, 11])
        self.assertEqual(t["bad"], [])
        self.assertEqual(t["mpa_frames"], 5)
        self.assertEqual(t["undecoded"], [])      # frame 9 is in frame 10's reassembly
        self.assertEqual([s for s, _ in t["expert"]], ["Warns", "Warns", "Chats"])

    def test_clean_crc_on(self):
        probs, notes, summ = self.verdict(ts_output(), True)
        self.assertEqual(probs, [])
        self.assertEqual(summ, "tshark: 3 FPDUs (iwdump 3), CRC good 3, bad 0, malformed 0, undecoded 0, errors 0")
        self.assertEqual(len(notes), 1)
        self.assertIn("D-SACK", notes[0])         # the MPA Res/Rev warnings are expected, not noted

    def test_clean_crc_off(self):
        probs, _n, summ = self.verdict(ts_output(crc=False), False)
        self.assertEqual(probs, [])
        self.assertIn("CRC off (0 checks)", summ)

    def test_bad_crc(self):
        probs, _n, summ = self.verdict(ts_output(bad=True), True)
        self.assertEqual(probs, ["tshark: 1 bad CRCs (first in frame 10)"])
        self.assertIn("CRC good 2, bad 1", summ)

    def test_crc_missing_when_on(self):
        probs, _n, _s = self.verdict(ts_output(crc=False), True)
        self.assertEqual(probs, ["tshark: 0 CRC checks for 3 FPDUs"])

    def test_crc_checked_when_off(self):
        probs, _n, _s = self.verdict(ts_output(), False)
        self.assertEqual(probs, ["tshark: 3 CRC checks with CRC off"])

    def test_malformed_and_error(self):
        probs, _n, summ = self.verdict(ts_output(malformed=True, error=True), True)
        self.assertEqual(probs, ["tshark: 1 malformed (first in frame 11)",
                                 "tshark error: 1 Malformed IWARP_MPA Malformed Packet (Exception occurred)"])
        self.assertIn("malformed 1, undecoded 0, errors 1", summ)

    def test_undecoded_payload(self):
        probs, _n, _s = self.verdict(ts_output(undecoded=True), True)
        self.assertEqual(probs, ["tshark: 1 frames with TCP payload not decoded as iWARP (first: frame 12)"])
        # a retransmission is not dissected again: not counted
        probs, _n, _s = self.verdict(ts_output(undecoded=True), True, retrans=[12])
        self.assertEqual(probs, [])

    def test_segment_outside_any_reassembly(self):
        text = ts_output().replace("#9(1452), ", "")
        probs, _n, _s = self.verdict(text, True)
        self.assertEqual(probs, ["tshark: 1 frames with TCP payload not decoded as iWARP (first: frame 9)"])

    def test_fpdus_differ_from_iwdump(self):
        probs, _n, summ = self.verdict(ts_output(), True, frames=(8, 10, 11, 14))
        self.assertEqual(probs, ["tshark: 3 FPDUs, iwdump 4 (ULPDU lengths differ; frames differ first at 14)"])
        self.assertIn("(iwdump 4)", summ)
        # FPDUs the capture does not hold whole are iwdump's only
        t = N.tshark_iwarp.parse(ts_output())
        fp = iw_fpdus((8, 10, 11)) + iw_fpdus((14,), crc="not_captured")
        self.assertEqual(N.tshark_verdict(t, True, fp)[0], [])
        # the same FPDUs, one shown in another frame (its segments captured out of order): a note
        fp = iw_fpdus((8, 11)) + [dict(iw_fpdus((9,))[0], ulpdu_len=1450)]
        probs, notes, _s = N.tshark_verdict(t, True, fp)
        self.assertEqual(probs, [])
        self.assertIn("tshark shows FPDUs in 2 frames other than iwdump's (segments captured out of order)", notes)
        # the same count, another length: a problem
        fp = iw_fpdus((8, 11)) + [dict(iw_fpdus((10,))[0], ulpdu_len=1446)]
        self.assertEqual(N.tshark_verdict(t, True, fp)[0],
                         ["tshark: 3 FPDUs, iwdump 3 (ULPDU lengths differ; frames differ first at ?)"])

    def test_failures(self):
        probs, _n, summ = N.tshark_verdict(None, True, [], problem="tshark failed (exit 2): no such file")
        self.assertEqual(probs, ["tshark failed (exit 2): no such file"])
        self.assertTrue(summ.startswith("tshark: failed"))
        t = N.tshark_iwarp.parse(ts_output())
        probs, _n, summ = N.tshark_verdict(t, True, None)
        self.assertEqual(probs, ["tshark: no iwdump reading to compare with"])
        self.assertIn("(iwdump ?)", summ)


class Bench(unittest.TestCase):
    """--bench: the guest's BENCH lines and their summary."""

    OUT = """RESULT delete OK controller nvme0 gone
BENCH seq-read 1 67108864 1 4.00
BENCH seq-write 1 67108864 1 8.00
BENCH rand-read-4k 1 524288 128 2.56
BENCH seq-read 2 67108864 1 3.20
BENCH seq-write 2 67108864 1 6.40
BENCH rand-read-4k 2 524288 128 1.28
BENCH seq-read 3 67108864 1 6.40
BENCH seq-write 3 67108864 1 8.00
BENCH rand-read-4k 3 524288 128 2.56
BENCH bad line
"""

    def test_parse(self):
        b = N.parse_bench(self.OUT)
        self.assertEqual(list(b), ["seq-read", "seq-write", "rand-read-4k"])
        self.assertEqual(b["seq-read"], [(67108864, 1, 4.0), (67108864, 1, 3.2), (67108864, 1, 6.4)])

    def test_summary(self):
        lines = N.bench_summary(N.parse_bench(self.OUT))
        self.assertEqual(lines[0], "bench seq-read: 16.78 20.97 10.49 MB/s, median 16.78, spread 63% "
                                   "(3 runs of 67108864 bytes)")
        self.assertEqual(lines[1], "bench seq-write: 8.39 10.49 8.39 MB/s, median 8.39, spread 25% "
                                   "(3 runs of 67108864 bytes)")
        self.assertEqual(lines[2], "bench rand-read-4k: 0.20 0.41 0.20 MB/s, median 0.20, spread 100%; "
                                   "50 100 50 IOPS, median 50 (3 runs of 524288 bytes)")
        self.assertEqual(N.median([3, 1, 2, 4]), 2.5)
        self.assertEqual(N.bench_summary({}), [])

    def test_script(self):
        self.assertNotIn("BENCH", N.kernel_host_script(4420, "nqn.x"))
        sc = N.kernel_host_script(4420, "nqn.x", bench=3, bench_mib=32, bench_rand=0)
        self.assertIn("BMIB=32; RUNS=3; RANDN=0", sc)
        self.assertNotIn("@", sc.replace("$@", ""))


class GuestScripts(unittest.TestCase):
    def test_the_host_script_targets_the_host_or_the_guest_itself(self):
        s = N.kernel_host_script(24420, "nqn.a'b", connect_opts="nr_io_queues=1")
        self.assertIn("TRADDR=10.0.2.2\nTRSVCID=24420\n", s)
        self.assertIn("NQN='nqn.a'\"'\"'b'", s)
        self.assertIn("CONNECT_OPTS=',nr_io_queues=1'", s)
        self.assertNotIn("@", s.replace("@MIN", "").replace("user@", ""))
        self.assertNotIn("loopback-target", s)
        lb = N.kernel_host_script(24420, "q", loopback=True)
        self.assertIn("TRADDR=10.0.2.15\nTRSVCID=4420\n", lb)
        self.assertIn("loopback-target", lb)
        self.assertIn("BACKING", lb)

    def test_the_target_script_waits_as_long_as_asked(self):
        s = N.kernel_target_script("q", 300)
        self.assertIn("WAIT_S=300\n", s)
        self.assertIn("/host/host-done", s)


if __name__ == "__main__":
    unittest.main()
