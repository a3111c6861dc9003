# nvmf-loopback.sh: guest script for siw-peer. The Linux NVMe-oF target
# (nvmet + nvmet-rdma over configfs, namespace = /dev/ram0) and the Linux
# NVMe-oF host (nvme-rdma, connected through /dev/nvme-fabrics) talk to each
# other over siw0 (10.0.2.15:4420) inside one guest. busybox sh; no nvme-cli.
#
# Run from the repository root (the guest needs brd with one 64 MiB RAM disk):
#   interop/siw-peer/siw-peer run --timeout 900 --modules nvme-rdma,nvmet-rdma,brd \
#       --module-param brd.rd_nr=1 --module-param brd.rd_size=65536 \
#       --out-dir /tmp/nvmf -- "$(cat interop/siw-peer/examples/nvmf-loopback.sh)"
# Add --siw-param mpa_crc_required=Y to negotiate MPA CRC.
#
# Prints "RESULT <step> OK|FAIL [detail]" lines (also in $OUT/results.txt),
# then the nvme/siw/rdma lines of dmesg ($OUT/dmesg.txt has all of it).
# Exit status 0 only if every step passed.

NQN=nqn.2024-01.io.test:ram0
TRADDR=10.0.2.15
TRSVCID=4420
CFS=/sys/kernel/config
NVMET=$CFS/nvmet
SUB=$NVMET/subsystems/$NQN
PORT=$NVMET/ports/1
CTRL=nvme0
DEV=/dev/nvme0n1
OUT=${OUT:-/tmp}
FAILS=0

res() { # res STEP OK|FAIL [detail]
  echo "RESULT $1 $2${3:+ $3}" | tee -a "$OUT/results.txt"
  [ "$2" = OK ] || FAILS=$((FAILS + 1))
}
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# ddrate MIB "dd args...": runs busybox dd (which prints no rate), echoes
# "<MB/s> MB/s (<s> s)", timed with /proc/uptime (10 ms ticks); 1 MB = 10^6 bytes
ddrate() {
  mib=$1; shift
  a=$(now); dd "$@" 2> /tmp/dd.err; r=$?; b=$(now)
  [ $r = 0 ] || cat /tmp/dd.err >&2
  awk -v a="$a" -v b="$b" -v m="$mib" 'BEGIN { printf "%.1f MB/s (%.2f s)", m * 1048576 / (b - a) / 1e6, b - a }'
  return $r
}
finish() {
  echo "== dmesg: nvme / siw / rdma / brd"
  dmesg | grep -iE 'nvme|siw|rdma|iw_cm|brd'
  echo "== dmesg: other error/warning lines"
  dmesg | grep -iE 'error|fail|warn|bug|oops|call trace|timed? ?out|reset|hung' |
    grep -ivE 'nvme|siw|rdma|iw_cm|brd|Fast TSC calibration|MMCONFIG'
  dmesg > "$OUT/dmesg.txt"
  echo "== summary: $FAILS failed step(s)"
  [ "$FAILS" = 0 ]
  exit $?
}

echo "== siw parameters: $(cd /sys/module/siw/parameters && for f in *; do printf '%s=%s ' $f $(cat $f); done)"

# ---- 1. configfs + RAM disk
grep -q " $CFS configfs " /proc/mounts || mount -t configfs configfs $CFS
if [ -d $NVMET ] && [ -b /dev/ram0 ]; then
  res setup OK "configfs mounted, /dev/ram0 $(blockdev --getsize64 /dev/ram0) bytes"
else
  res setup FAIL "nvmet dir: $(ls -d $NVMET 2>&1); ram0: $(ls -l /dev/ram0 2>&1)"; finish
fi

# ---- 2. target: subsystem, namespace 1 = /dev/ram0, rdma port 1 on 10.0.2.15:4420
t0=$(now)
if mkdir $SUB && echo 1 > $SUB/attr_allow_any_host &&
   mkdir $SUB/namespaces/1 && echo -n /dev/ram0 > $SUB/namespaces/1/device_path &&
   echo 1 > $SUB/namespaces/1/enable &&
   mkdir $PORT && echo rdma > $PORT/addr_trtype && echo ipv4 > $PORT/addr_adrfam &&
   echo $TRADDR > $PORT/addr_traddr && echo $TRSVCID > $PORT/addr_trsvcid &&
   ln -s $SUB $PORT/subsystems/$NQN; then
  res target OK "nvmet-rdma port 1 $TRADDR:$TRSVCID, subsystem $NQN ($(since $t0) s)"
else
  res target FAIL; finish
fi

# ---- 3. host: connect over rdma (same fd written, then read: instance=N,cntlid=M)
t0=$(now)
exec 3<> /dev/nvme-fabrics
if echo "transport=rdma,traddr=$TRADDR,trsvcid=$TRSVCID,nqn=$NQN" >&3; then
  read -r INFO <&3
  exec 3>&-
  n=0; while [ ! -b $DEV ] && [ $n -lt 300 ]; do usleep 100000; n=$((n + 1)); done
  if [ -b $DEV ]; then
    res connect OK "$INFO, $DEV $(blockdev --getsize64 $DEV) bytes ($(since $t0) s)"
  else
    res connect FAIL "$INFO, but no $DEV after 30 s"; finish
  fi
else
  exec 3>&-
  res connect FAIL "write to /dev/nvme-fabrics failed ($(since $t0) s)"; finish
fi
echo "== controller $CTRL:"
for f in transport address state subsysnqn model cntlid queue_count sqsize; do
  [ -r /sys/class/nvme/$CTRL/$f ] && echo "  $f: $(cat /sys/class/nvme/$CTRL/$f)"
done
echo "== rdma resources while connected:"
rdma resource show cm_id 2>&1 | sed 's/^/  /'
rdma resource show qp 2>&1 | sed 's/^/  /'

# ---- 4. 16 MiB random pattern: write O_DIRECT, read back O_DIRECT, compare
dd if=/dev/urandom of=/tmp/pat bs=1M count=16 2> /dev/null
W=$(ddrate 16 if=/tmp/pat of=$DEV bs=1M count=16 oflag=direct) && res write16 OK "$W" || res write16 FAIL
R=$(ddrate 16 if=$DEV of=/tmp/back bs=1M count=16 iflag=direct) && res read16 OK "$R" || res read16 FAIL
if cmp /tmp/pat /tmp/back; then res compare OK "$(sha256sum < /tmp/pat | cut -c1-16)"; else res compare FAIL; fi
# the target's backing RAM disk holds the same bytes
T=$(dd if=/dev/ram0 bs=1M count=16 iflag=direct 2> /dev/null | sha256sum | cut -c1-16)
[ "$T" = "$(sha256sum < /tmp/pat | cut -c1-16)" ] && res backing OK "ram0 sha256 $T" || res backing FAIL "ram0 sha256 $T"

# ---- 5. timed 64 MiB O_DIRECT read (three times; the first one is "the" number),
#         and, for reference, a 64 MiB O_DIRECT write and a local read of ram0
for i in 1 2 3; do
  R=$(ddrate 64 if=$DEV of=/dev/null bs=1M count=64 iflag=direct) && res read64-$i OK "$R" || res read64-$i FAIL
done
W=$(ddrate 64 if=/dev/zero of=$DEV bs=1M count=64 oflag=direct) && res write64 OK "$W" || res write64 FAIL
L=$(ddrate 64 if=/dev/ram0 of=/dev/null bs=1M count=64 iflag=direct) && res ram0-local-read64 OK "$L (no NVMe-oF: baseline)" || res ram0-local-read64 FAIL

# ---- 6. delete the controller, then tear the target down
t0=$(now)
echo 1 > /sys/class/nvme/$CTRL/delete_controller
n=0; while [ -e /sys/class/nvme/$CTRL ] && [ $n -lt 300 ]; do usleep 100000; n=$((n + 1)); done
if [ ! -e /sys/class/nvme/$CTRL ] && [ ! -b $DEV ]; then
  res delete OK "controller gone ($(since $t0) s)"
else
  res delete FAIL "still present after 30 s"
fi
if rm $PORT/subsystems/$NQN && rmdir $PORT && echo 0 > $SUB/namespaces/1/enable &&
   rmdir $SUB/namespaces/1 && rmdir $SUB; then
  res target-teardown OK
else
  res target-teardown FAIL
fi
finish
