#!/usr/bin/env bash
# make demo: nyxd with its defaults on this host, a busybox web server published on
# 127.0.0.1:8080, a second container fetching it by name through the embedded DNS, then
# everything stopped and the host checked to be as it was. Needs root (Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
NYX="$BIN/nyx"
[ "$(id -u)" = 0 ] || { echo "demo: run as root (sudo make demo)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/nyx-demo.XXXXXX)
NYXD_PID=""
read -r NFT_TABLE NFT_FAMILIES < <("$BIN/python" -c \
  'from nyx_plugins_native import FAMILIES, TABLE; print(TABLE, *FAMILIES)')
BRIDGE=nyx0
IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
HAD_RUN=$([ -e /run/nyx ] && echo 1 || echo 0)
HAD_STATE=$([ -e /var/lib/nyx ] && echo 1 || echo 0)
# nyx's tables (ip nyx, and ip6 nyx on a kernel with IPv6) that were not there before
had_table() { nft list table "$1" "$NFT_TABLE" >/dev/null 2>&1; }
NEW_TABLES=""
for f in $NFT_FAMILIES; do had_table "$f" || NEW_TABLES="$NEW_TABLES $f"; done
HAD_BRIDGE=$(ip link show "$BRIDGE" >/dev/null 2>&1 && echo 1 || echo 0)
HAD_CGROUP=$(ls -d /sys/fs/cgroup/nyx /sys/fs/cgroup/*/nyx >/dev/null 2>&1 && echo 1 || echo 0)
if [ "$HAD_BRIDGE" = 1 ] || [ -S /run/nyx/nyxd.sock ]; then
  echo "demo: a nyxd seems to be running already (nyx0 or /run/nyx/nyxd.sock exists)" >&2
  exit 1
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$NYXD_PID" ] && kill -0 "$NYXD_PID" 2>/dev/null; then
    kill -TERM "$NYXD_PID"
    for _ in $(seq 1 100); do kill -0 "$NYXD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$NYXD_PID" 2>/dev/null && kill -KILL "$NYXD_PID"
    wait "$NYXD_PID" 2>/dev/null
  fi
  # anything runc still knows under nyxd's run dir (only after a crash)
  if [ -d /run/nyx/runc ]; then
    for id in $(runc --root /run/nyx/runc list -q 2>/dev/null); do
      runc --root /run/nyx/runc delete --force "$id" >/dev/null 2>&1
    done
  fi
  # mounts nyxd made (netns bind mounts, overlay rootfs), deepest first
  awk '{print $5}' /proc/self/mountinfo | grep -E '^/(run/nyx|var/lib/nyx)(/|$)' | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  # host-wide network state the native driver created for the demo
  [ "$HAD_BRIDGE" = 0 ] && ip link del "$BRIDGE" 2>/dev/null
  for f in $NEW_TABLES; do nft delete table "$f" "$NFT_TABLE" 2>/dev/null; done
  echo "$IP_FORWARD" > /proc/sys/net/ipv4/ip_forward
  # runc's cgroup parent for nyx containers (empty by now)
  if [ "$HAD_CGROUP" = 0 ]; then
    for d in /sys/fs/cgroup/nyx /sys/fs/cgroup/*/nyx; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  fi
  [ "$HAD_RUN" = 0 ] && rm -rf /run/nyx
  [ "$HAD_STATE" = 0 ] && rm -rf /var/lib/nyx
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "build a busybox image from the distro's busybox-static"
"$BIN/python" examples/busybox_image.py "$WORK/busybox.tar"

step "start nyxd with the defaults (log: $WORK/nyxd.log)"
"$BIN/nyxd" --log-level info >"$WORK/nyxd.log" 2>&1 &
NYXD_PID=$!
for _ in $(seq 1 100); do
  "$NYX" info >/dev/null 2>&1 && break
  kill -0 "$NYXD_PID" 2>/dev/null || { cat "$WORK/nyxd.log"; exit 1; }
  sleep 0.1
done
grep '"network backend"' "$WORK/nyxd.log"
"$NYX" info

step "nyx load"
"$NYX" load -i "$WORK/busybox.tar"
"$NYX" images

step "nyx run -d --name web --hostname web -p 8080:80 busybox:nyx httpd -f -p 80 -h /www"
"$NYX" run -d --name web --hostname web -p 8080:80 busybox:nyx httpd -f -p 80 -h /www
"$NYX" ps

step "curl http://127.0.0.1:8080/ from the host"
PAGE=""
for _ in $(seq 1 50); do
  PAGE=$(curl -fsS -m 2 http://127.0.0.1:8080/ 2>/dev/null) && break
  sleep 0.1
done
echo "$PAGE"
[ -n "$PAGE" ] || { echo "demo: no answer on 127.0.0.1:8080" >&2; exit 1; }

step "another container: wget -qO- http://web.nyxd.local/ (embedded DNS)"
FROM_CTR=$("$NYX" run --rm busybox:nyx wget -qO- http://web.nyxd.local/ | sed -n '/^<html/,$p')
echo "$FROM_CTR"
[ "$FROM_CTR" = "$PAGE" ] || { echo "demo: the page by name differs" >&2; exit 1; }

step "stop and remove"
"$NYX" stop -t 2 web
"$NYX" rm web
"$NYX" ps -a

step "stop nyxd"
PID=$NYXD_PID
kill -TERM "$NYXD_PID"
wait "$NYXD_PID" || true
NYXD_PID=""
tail -n 3 "$WORK/nyxd.log"

step "host check"
fail=0
kill -0 "$PID" 2>/dev/null && { echo "leftover: nyxd process $PID"; fail=1; }
if [ -d /run/nyx/runc ] && [ -n "$(runc --root /run/nyx/runc list -q 2>/dev/null)" ]; then
  echo "leftover: containers"; runc --root /run/nyx/runc list; fail=1
fi
grep -qE ' /(run/nyx|var/lib/nyx)(/| )' /proc/self/mountinfo && { echo "leftover: mounts"; fail=1; }
ip -br link | grep -q '^nv' && { echo "leftover: veth"; ip -br link | grep '^nv'; fail=1; }
# put back what nyxd keeps between runs on purpose (bridge, nft table, state), as the
# trap would, then check the host is as before the demo
trap - EXIT
cleanup_status=0
(cleanup) || cleanup_status=$?
ip link show "$BRIDGE" >/dev/null 2>&1 && { echo "leftover: $BRIDGE"; fail=1; }
for f in $NEW_TABLES; do
  had_table "$f" && { echo "leftover: nft table $f $NFT_TABLE"; fail=1; }
done
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$IP_FORWARD" ] || { echo "ip_forward changed"; fail=1; }
if [ "$fail" = 0 ] && [ "$cleanup_status" = 0 ]; then
  echo "host is as before: no $BRIDGE, no nft tables ($NFT_FAMILIES) $NFT_TABLE, no mounts,"
  echo "no containers, no nyxd; ip_forward=$IP_FORWARD"
  echo "demo OK"
else
  echo "demo: host check FAILED" >&2
  exit 1
fi
