#!/bin/sh
# nvmf-kernel-initiator.sh: a stand-in --initiator-cmd for `interop/nvmf kernel-target` (a host
# script, run from the repository root): the kernel's NVMe-oF host (nvme-rdma) in a second guest
# connects to 10.0.2.2:$NVMF_PORT, which slirp turns into the host's 127.0.0.1:$NVMF_PORT, which
# the first guest's forward takes to its kernel target. It writes $NVMF_PATTERN at $NVMF_OFFSET
# with oflag=direct, reads it back with iflag=direct, compares, and deletes the controller.
# This checks the kernel-target mode end to end before our own initiator exists:
#
#   interop/nvmf kernel-target --port 24440 --nqn nqn.2024-01.io.test:ram0 \
#       --initiator-cmd interop/siw-peer/examples/nvmf-kernel-initiator.sh
set -eu
: "${NVMF_PORT:?}" "${NVMF_NQN:?}" "${NVMF_PATTERN:?}" "${NVMF_OFFSET:?}" "${NVMF_LENGTH:?}"
MIB=1048576
if [ $((NVMF_OFFSET % MIB)) != 0 ] || [ $((NVMF_LENGTH % MIB)) != 0 ]; then
    echo "nvmf-kernel-initiator: offset and length must be multiples of 1 MiB" >&2
    exit 2
fi
cp "$NVMF_PATTERN" "${NVMF_WORK:-/tmp}/pattern.bin"
# the same MPA CRC setting as the target's guest (NVMF_CRC=on|off, from interop/nvmf --crc)
CRC=
[ "${NVMF_CRC:-off}" = on ] && CRC="--siw-param mpa_crc_required=Y"
exec "$(dirname "$0")/../siw-peer" run --timeout 200 --modules nvme-rdma $CRC \
    --put "${NVMF_WORK:-/tmp}/pattern.bin" -- "
NQN='$NVMF_NQN'
exec 3<> /dev/nvme-fabrics
echo \"transport=rdma,traddr=10.0.2.2,trsvcid=$NVMF_PORT,nqn=\$NQN\" >&3 || exit 1
read -r INFO <&3; exec 3>&-
C=nvme\$(echo \"\$INFO\" | sed -n 's/.*instance=\\([0-9]*\\).*/\\1/p')
echo \"connected: \$INFO\"
n=0; while [ ! -b /dev/\${C}n1 ] && [ \$n -lt 300 ]; do usleep 100000; n=\$((n + 1)); done
dd if=/host/pattern.bin of=/dev/\${C}n1 bs=1M seek=$((NVMF_OFFSET / MIB)) count=$((NVMF_LENGTH / MIB)) oflag=direct &&
dd if=/dev/\${C}n1 of=/tmp/back bs=1M skip=$((NVMF_OFFSET / MIB)) count=$((NVMF_LENGTH / MIB)) iflag=direct &&
cmp /host/pattern.bin /tmp/back && echo \"read back: same $NVMF_LENGTH bytes\"
r=\$?
echo 1 > /sys/class/nvme/\$C/delete_controller
dmesg | grep -E 'nvme|rdma'
exit \$r"
