# Shell helpers for the siw-peer guest (busybox sh). Pass the file's text as the
# start of the guest command:  LIB="$(cat examples/guest-capture-lib.sh)"
#
#   cap NAME IFACE 'commands'   capture the TCP traffic of 'commands' on IFACE into
#                               $OUT/NAME.pcap. In-guest siw0<->siw0 traffic is
#                               routed over lo (10.0.2.15 is local), so use lo for it.
#                               SNAPLEN=N before cap truncates frames (default 0 = whole);
#                               CAP_BUFFER_KB sets tcpdump's buffer (default 65536).
#                               CAP_TRIES=N repeats a failed (rc != 0) capture up to N
#                               times in all (default 1). Files of a failed try are
#                               renamed to $OUT/failed-tryK-NAME.*
#   rp [rping args]             rping server + client on 10.0.2.15 (default -v -C 3 when
#                               no args are given); prints both outputs
#   pt TOOL [perftest args]     perftest server + client (-R -d siw0, client -> 10.0.2.15);
#                               prints both outputs
# Each server and client runs under `timeout ${PEER_TIMEOUT:-60}` so that a hung
# peer (see docs/tool-compat.md, "Observations") cannot stall the whole guest.
# Inside cap, rp and pt also save the outputs to $OUT/NAME.client.txt and
# $OUT/NAME.server.txt (stdout and stderr into one file; stdout is block-buffered
# there, so stderr lines may come first).
CAPNAME=
cap() {
  _try=1
  while :; do
    _cap1 "$@" && return 0
    # keep what the failed try left, for diagnosis
    for f in "$OUT/$1".*; do [ -e "$f" ] && mv "$f" "$OUT/failed-try$_try-${f#$OUT/}"; done
    [ $_try -ge "${CAP_TRIES:-1}" ] && return 1
    _try=$((_try+1)); echo "##### $1: retry $_try"
  done
}
_cap1() {
  name=$1; ifc=$2; shift 2
  # write to tmpfs first (9p is slow enough to make tcpdump drop packets), with a big buffer
  tcpdump --immediate-mode -B "${CAP_BUFFER_KB:-65536}" -i "$ifc" -s "${SNAPLEN:-0}" -U -w "/tmp/$name.pcap" tcp 2>/tmp/td.log &
  T=$!
  n=0; while ! grep -q "listening on" /tmp/td.log && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
  echo "##### $name (iface $ifc) params: $(cd /sys/module/siw/parameters && for p in mpa_version mpa_crc_required mpa_crc_strict peer_to_peer; do printf '%s=%s ' $p $(cat $p); done)"
  CAPNAME=$name
  t0=$(date +%s)
  eval "$@"
  r=$?
  echo "##### $name rc=$r ($(( $(date +%s) - t0 )) s)"
  CAPNAME=
  sleep 1.5
  kill -INT $T; wait $T
  mv "/tmp/$name.pcap" "$OUT/$name.pcap"
  grep -E "packets (captured|received|dropped)" /tmp/td.log | tr '\n' ' '; echo
  return $r
}
_save() { # _save ROLE FILE: keep a copy of an output under the current capture name
  [ -n "$CAPNAME" ] && cp "$2" "$OUT/$CAPNAME.$1.txt"
  return 0
}
rp() { # rp [rping args]: server and client on 10.0.2.15
  [ $# -eq 0 ] && set -- -v -C 3
  timeout ${PEER_TIMEOUT:-60} rping -s -a 10.0.2.15 "$@" > /tmp/rs.txt 2>&1 &
  S=$!
  sleep 1
  timeout ${PEER_TIMEOUT:-60} rping -c -a 10.0.2.15 "$@" > /tmp/rc.txt 2>&1; r=$?
  [ $r != 0 ] && { sleep 3; kill $S 2>/dev/null; }
  wait $S; rs=$?
  echo "--- rping client (rc=$r):"; cat /tmp/rc.txt
  echo "--- rping server (rc=$rs):"; cat /tmp/rs.txt
  _save client /tmp/rc.txt; _save server /tmp/rs.txt
  return $r
}
pt() { # pt TOOL [args]: perftest server, then client -> 10.0.2.15
  t=$1; shift
  timeout ${PEER_TIMEOUT:-60} $t -R -d siw0 "$@" > /tmp/ps.txt 2>&1 &
  S=$!
  sleep 1
  timeout ${PEER_TIMEOUT:-60} $t -R -d siw0 "$@" 10.0.2.15 > /tmp/pc.txt 2>&1; r=$?
  # a failed client leaves the server waiting for a connection: give it 3 s
  [ $r != 0 ] && { sleep 3; kill $S 2>/dev/null; }
  wait $S; rs=$?
  echo "--- $t client (rc=$r):"; cat /tmp/pc.txt
  echo "--- $t server (rc=$rs):"; cat /tmp/ps.txt
  _save client /tmp/pc.txt; _save server /tmp/ps.txt
  [ $r = 0 ] && r=$rs
  return $r
}
