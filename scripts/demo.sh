#!/bin/sh
# The local demo, as far as the system exists today: the ring core on the command line.
# A scripted scale-up from 3 to 5 members and back down to 2, printing what each step
# would move. The live system (`ringside up` with NATS, reducer and watcher) replaces
# this script when it lands; see README "What exists today".
set -eu
cd "$(dirname "$0")/.."
BIN=${RINGSIDE_BIN:-target/release/ringside}
[ -x "$BIN" ] || { echo "demo: $BIN not built; run ./dev demo" >&2; exit 1; }

step() { printf '\n=== %s\n$ ringside %s\n' "$1" "$(echo "$2" | tr -s ' ')"; }

members="node-1,node-2,node-3"
keys="user:42 cart:7 session:abc order:2026-11-26"

step "who owns these keys on 3 members?" "ring lookup --members $members $keys"
# shellcheck disable=SC2086
"$BIN" ring lookup --members "$members" $keys

for next in node-4 node-5; do
    step "scale up: add $next" "ring plan --members $members --add $next --max-ranges 5"
    "$BIN" ring plan --members "$members" --add "$next" --max-ranges 5
    members="$members,$next"
done

step "the same keys on 5 members (only keys now owned by node-4/node-5 moved)" \
    "ring lookup --members $members $keys"
# shellcheck disable=SC2086
"$BIN" ring lookup --members "$members" $keys

step "scale down to 2: remove node-1, node-4, node-5" \
    "ring plan --members $members --remove node-1,node-4,node-5 --max-ranges 5"
"$BIN" ring plan --members "$members" --remove node-1,node-4,node-5 --max-ranges 5

cat <<'TXT'

That was the ring core alone (no server). Try next:
  ./dev just ringside ring plan --members a,b,c --add d --output json
  ./dev just ringside ring lookup --members a,b:2,c --strategy random KEY...
  ./dev just bench ring        # lookup speed, balance and movement vs other rings
Coming next (open issues): the NATS event backbone, the reducer with its gRPC
RingService, the pod/heartbeat watchers, tail/replay, and `ringside up`.
TXT
