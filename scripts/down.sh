#!/bin/sh
# `make down`: stop microcloudd (SIGTERM via its pidfile) and wait until it and every child
# (database, OVN, OVS, Ceph, libvirtd, guests) is gone; microcloudd puts IPv4 forwarding back
# off if it turned it on. The state stays: `make up` resumes
# the same cloud. `--purge` also deletes the state dir and the host network leftovers (the
# member's network namespace, its veth links and the host NAT table).
set -eu
cd "$(dirname "$0")/.."
DIR="${MICROCLOUD_DIR:-/var/lib/microcloud}"
BIN="$(pwd)/.venv/bin"
PIDFILE="$DIR/microcloudd.pid"
PURGE=0
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
    esac
done

# Children of microcloudd carry the state dir in their command lines (configs, sockets).
children() { pgrep -f -- "$DIR/" || true; }

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    pid=$(cat "$PIDFILE")
    echo "==> stopping microcloudd (pid $pid)"
    kill -TERM "$pid"
    i=0
    # Components get their own stop timeouts (a Ceph OSD up to 30 s); 120 s covers the worst case.
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 1200 ]; then
            echo "microcloudd ignored SIGTERM for 120 s: SIGKILL (its children die with it)" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
else
    echo "==> microcloudd is not running"
fi
rm -f "$PIDFILE"

i=0
while [ -n "$(children)" ]; do
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then
        echo "processes of $DIR still running after 30 s:" >&2
        ps -o pid,cmd -p "$(children | tr '\n' ',' | sed 's/,$//')" >&2 || true
        exit 1
    fi
    sleep 0.1
done
echo "==> stopped: no process of $DIR is left"

if [ "$PURGE" = 1 ]; then
    case "$DIR" in
        ""|/|/var|/var/lib|/tmp|/root|/home) echo "refusing to purge $DIR" >&2; exit 1 ;;
    esac
    echo "==> purging $DIR and its network namespace"
    "$BIN/python" -m microcloudd.stack.purge "$DIR"
    rm -rf "$DIR"
fi
