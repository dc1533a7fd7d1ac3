#!/bin/sh
# `make up`: microcloudd running, this machine initialised (`microcloud init --auto`), the test
# image imported and an instance `demo` running. Idempotent: a second run changes nothing.
# State: $MICROCLOUD_DIR (default /var/lib/microcloud); daemon log and pidfile live there.
# No systemd here (PID 1 is not systemd on our build machines): the daemon runs under setsid
# with a pidfile; where systemd is PID 1, systemd/microcloudd.service is the better home.
set -eu
cd "$(dirname "$0")/.."
DIR="${MICROCLOUD_DIR:-/var/lib/microcloud}"
export MICROCLOUD_DIR="$DIR"
BIN="$(pwd)/.venv/bin"
MC="$BIN/microcloud"
PIDFILE="$DIR/microcloudd.pid"
LOG="$DIR/microcloudd.log"
IMAGE="${MICROCLOUD_TEST_IMAGE_DIR:-$DIR/test-image}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'make up: %s\n' "$*" >&2; exit 1; }
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...
    secs=$1; what=$2; shift 2; i=0
    until "$@" >/dev/null 2>&1; do
        running || die "microcloudd exited while waiting for $what; see $LOG"
        i=$((i + 1)); [ "$i" -le $((secs * 5)) ] || die "timed out waiting for $what; see $LOG"
        sleep 0.2
    done
}
stack_running() { "$MC" init --show | grep -q '^stack: running'; }
initialized() { "$MC" init --show | grep -q '^initialized: true'; }
instance_status() { "$MC" list --format json 2>/dev/null | "$BIN/python" -c '
import json, sys
for i in json.load(sys.stdin):
    if i["name"] == sys.argv[1]:
        print(i["status"])' "$1"; }
demo_running() { [ "$(instance_status demo)" = Running ]; }

mkdir -p "$DIR"
chmod 711 "$DIR"
if running; then
    say "microcloudd is running (pid $(cat "$PIDFILE"))"
else
    say "starting microcloudd (state in $DIR, log in $LOG)"
    setsid "$BIN/microcloudd" --state-dir "$DIR" </dev/null >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
fi
wait_for 60 "the API socket" "$MC" status

if initialized; then
    say "already initialised"
else
    say "microcloud init --auto"
    "$MC" init --auto
fi
wait_for 300 "the stack to start" stack_running

say "test image"
img=$("$BIN/python" scripts/build-test-image.py "$IMAGE" 2>/dev/null | tail -n 1)
[ -f "$img" ] || die "building the test image failed (run scripts/build-test-image.py $IMAGE)"
if "$MC" image show testimage >/dev/null 2>&1; then
    say "image testimage already imported"
else
    "$MC" image import "$img" --alias testimage
fi

"$MC" launch --help >/dev/null 2>&1 || die "this build has no \`microcloud launch\` yet"
case "$(instance_status demo)" in
    "") say "microcloud launch testimage demo"; "$MC" launch testimage demo ;;
    Running) say "instance demo already running" ;;
    *) say "starting instance demo"; "$MC" start demo ;;
esac
wait_for 300 "instance demo to run" demo_running

cat <<DONE

microcloud is up (state in $DIR). Try:
  export MICROCLOUD_DIR=$DIR
  $MC status
  $MC list
  $MC console demo        (Ctrl-a q to leave)
  make down               (stops everything; \`scripts/down.sh --purge\` also deletes the state)
DONE
