#!/bin/sh
# The local demo (`./dev demo`): `ringside up` with 3 nodes, the decoded events tailed
# to this terminal, keyed load from 20 client addresses, a scripted scale to 5 and back
# to 2 (keys hand off on every rebalance), a check that no acknowledged write was lost,
# then the commands to try next. The system keeps running until Ctrl-C when this is a terminal;
# otherwise (or with RINGSIDE_DEMO_HOLD=0) it stops after the script.
set -eu
cd "$(dirname "$0")/.."
BIN=${RINGSIDE_BIN:-target/release/ringside}
STATE=${RINGSIDE_STATE_DIR:-.ringside}
export RINGSIDE_STATE_DIR="$STATE"
[ -x "$BIN" ] || { echo "demo: $BIN not built; run ./dev demo" >&2; exit 1; }

say() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }

mkdir -p "$STATE"
say "ringside up --nodes 3   (nats-server, reducer, heartbeat watcher, 3 nodes, 2 copies of each key)"
"$BIN" up --nodes 3 2>"$STATE/up.log" &
UP=$!
TAIL=""
LOAD=""
stop() {
    trap - EXIT INT TERM
    [ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null || true
    [ -n "$TAIL" ] && kill "$TAIL" 2>/dev/null || true
    if kill -0 "$UP" 2>/dev/null; then
        kill -INT "$UP" 2>/dev/null || true
        wait "$UP" 2>/dev/null || true
    fi
}
trap stop EXIT INT TERM

# Wait (at most 60 s) for `up` to record itself; fail with its log if it exits.
i=0
until [ -f "$STATE/up.json" ]; do
    if ! kill -0 "$UP" 2>/dev/null; then
        echo "demo: ringside up failed; its log ($STATE/up.log) ends with:" >&2
        tail -n 20 "$STATE/up.log" >&2
        exit 1
    fi
    i=$((i + 1))
    [ "$i" -le 600 ] || { echo "demo: ringside up did not come up within 60 s" >&2; exit 1; }
    sleep 0.1
done

say "ringside tail   (every stored event of this ring, decoded, as it happens)"
"$BIN" tail --from-seq 1 2>/dev/null &
TAIL=$!
sleep 2

say "ringside load   (keyed PUT/GET from 20 client addresses, every write recorded)"
"$BIN" load --duration 20s --rate 200 --clients 20 --keys 2000 --reads 0.5 \
    --record "$STATE/demo-writes.jsonl" >"$STATE/load.out" 2>/dev/null &
LOAD=$!
sleep 4

say "ringside scale 5   (two more nodes join: rebalances, keys handed off to them)"
"$BIN" scale 5 --wait 30 2>/dev/null
sleep 3

say "ringside scale 2   (three nodes leave: each hands its keys over, then exits)"
"$BIN" scale 2 --wait 30 2>/dev/null
wait "$LOAD" || true
LOAD=""

say "the load's summary"
cat "$STATE/load.out"

say "ringside load --verify   (every acknowledged write reads back)"
"$BIN" load --verify "$STATE/demo-writes.jsonl" 2>/dev/null

say "ringside replay verify   (rebuild the whole history, compare every checksum)"
"$BIN" replay verify 2>/dev/null

cat <<'TXT'

Try next, in another terminal (the tools find the running system in .ringside/):
  target/release/ringside scale 4 --wait 30
  target/release/ringside load --duration 30s --clients 50
  target/release/ringside replay state
  target/release/ringside replay diff --from 1 --to 3
  target/release/ringside replay key-history user:42
  target/release/ringside ring plan --members a,b,c --add d     # what-if, no server
  nats sub 'ringside.default.stored.>' ...   (optional nats CLI; see README)
TXT

if [ "${RINGSIDE_DEMO_HOLD:-1}" != 0 ] && [ -t 0 ]; then
    say "running; Ctrl-C stops everything"
    wait "$UP" || true
fi
