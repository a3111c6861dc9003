#!/bin/sh
# Install the host packages that interop/siw-peer needs to build its guest
# image and to run it (Debian 12 "bookworm", run as root, no terminal needed).
#
#   sh interop/setup.sh            # apt-get update + install
#   SIW_PEER_SETUP_NO_UPDATE=1 sh interop/setup.sh   # skip apt-get update
#
# What each package is for:
#   qemu-system-x86          runs the guest (pulls seabios and ipxe-qemu)
#   gcc-12 make              compile siw.ko out of tree against linux-headers
#   libelf1 libssl3          runtime libraries of the linux-kbuild-6.1 helpers
#                            (the tool unpacks that .deb instead of installing it)
#   xz-utils tar             unpack linux-source-6.1.tar.xz
#   dpkg apt                 apt-get download / apt-cache / dpkg-deb
#   diffutils findutils gzip save the module-parameter patch, list and pack the initramfs
#   libc-bin                 ldd / ldconfig for the guest's library closure
#   python3                  the siw-peer tool, mpa_probe.py, pcap_facts.py
#   kmod cpio                modinfo/depmod and cpio (the tool brings its own copies
#                            from the .debs, installed here for manual inspection)
#   tshark                   decoding the captures (its setuid question is pre-answered)
#   qemu-utils               qemu-img: interop/nvmf nbd-check writes and reads a pattern
#                            through an NBD export (a Recommends of qemu-system-x86 only)
#   debconf                  debconf-set-selections
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# wireshark-common asks whether non-root users may capture; answer "no"
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections

if [ -z "${SIW_PEER_SETUP_NO_UPDATE:-}" ]; then
    apt-get update -q
fi

# qemu-utils comes from the same source as qemu-system-x86, and a newer one (a machine given
# bookworm-backports' qemu-utils, whose source list no longer has backports) Breaks the
# qemu-system-common that qemu-system-x86 needs, so apt refuses the whole install. Ask for
# qemu-utils at qemu-system-x86's version, allowing the downgrade, when apt has that version.
qemu_utils=qemu-utils
qemu_version=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: *//p')
if [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ] &&
    apt-cache madison qemu-utils | grep -q " $qemu_version "; then
    qemu_utils="qemu-utils=$qemu_version"
fi

apt-get install -y -q --no-install-recommends --allow-downgrades \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    qemu-system-x86 gcc-12 make libelf1 libssl3 xz-utils tar dpkg apt \
    diffutils findutils gzip libc-bin python3 kmod cpio tshark debconf "$qemu_utils" \
    iproute2 ethtool \
    </dev/null

echo "setup.sh: host packages installed"
