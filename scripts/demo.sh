#!/bin/sh
# The local demo (`./dev demo`): `ringside up` with 2 nodes, the live dashboard (its
# URL first), its Prometheus and its autoscaler (short periods so it can be watched), the decoded events tailed to this
# terminal, keyed load from 250 client addresses (the autoscaler adds a node for each
# 100; keys hand off on every rebalance), the autoscaler's decisions, the stored
# metrics, then the load stops and the autoscaler scales back down once the clients
# have left the last minute and its window has passed; a check that no acknowledged
# write was lost and that the history replays; then the commands to try next. The
# system keeps running until Ctrl-C when this is a terminal; otherwise (or with
# RINGSIDE_DEMO_HOLD=0) it stops after the script.
set -eu
cd "$(dirname "$0")/.."
BIN=${RINGSIDE_BIN:-target/release/ringside}
STATE=${RINGSIDE_STATE_DIR:-.ringside}
export RINGSIDE_STATE_DIR="$STATE"
[ -x "$BIN" ] || { echo "demo: $BIN not built; run ./dev demo" >&2; exit 1; }

say() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }

mkdir -p "$STATE"
say "ringside up --nodes 2   (nats-server, reducer, heartbeat watcher, collector, bridge and dashboard, 2 nodes with 2 copies of each key, Prometheus, autoscaler)"
"$BIN" up --nodes 2 --min-nodes 2 --autoscale-every 5s --scale-down-window 20s \
    --scrape-interval 2s 2>"$STATE/up.log" &
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

say "the dashboard: open http://127.0.0.1:9480/ in a browser (the ring, its rebalances, load, history)"
curl -s http://127.0.0.1:9480/api/status && echo

say "ringside tail   (every stored event of this ring, decoded, as it happens)"
"$BIN" tail --from-seq 1 2>/dev/null &
TAIL=$!
sleep 2

# The ring's size, from the history (0 when it cannot be read).
members() {
    "$BIN" replay state --output json 2>/dev/null |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0
}
# Waits (at most $2 seconds) until the ring has $1 members.
wait_members() {
    i=0
    while [ "$(members)" != "$1" ]; do
        i=$((i + 1))
        [ "$i" -le "$2" ] || { echo "demo: the ring did not reach $1 members within $2 s" >&2; exit 1; }
        sleep 1
    done
}
PROMETHEUS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["endpoints"].get("prometheus.web", ""))' "$STATE/up.json")

say "ringside load   (keyed PUT/GET from 250 client addresses for 30 s, every write recorded)"
"$BIN" load --duration 30s --rate 250 --clients 250 --keys 2000 --reads 0.5 \
    --record "$STATE/demo-writes.jsonl" >"$STATE/load.out" 2>/dev/null &
LOAD=$!

say "the autoscaler: 250 distinct clients, 100 per node: 3 nodes (joins, a rebalance, keys handed off)"
wait_members 3 60
wait "$LOAD" || true
LOAD=""

say "the load's summary"
cat "$STATE/load.out"

if [ -n "$PROMETHEUS" ]; then
    say "what Prometheus stored (http://$PROMETHEUS): distinct clients of the ring, each node's share"
    for q in ringside_collector_ring_unique_client_ips ringside_collector_node_share ringside_collector_ring_imbalance; do
        python3 - "$PROMETHEUS" "$q" <<'PY' || true
import json, sys, urllib.parse, urllib.request
addr, query = sys.argv[1], sys.argv[2]
url = f"http://{addr}/api/v1/query?query={urllib.parse.quote(query)}"
for series in json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]:
    labels = ",".join(f'{k}="{v}"' for k, v in series["metric"].items() if k not in ("instance", "job", "service", "__name__"))
    print(f"  {query}{{{labels}}} {float(series['value'][1]):.4g}")
PY
    done
fi

say "the load stopped: once its clients leave the nodes' last minute and 20 s pass, the autoscaler goes back to 2 nodes"
wait_members 2 150

say "ringside replay events --type ScaleDecided   (why the ring changed)"
"$BIN" replay events --type ScaleDecided 2>/dev/null

say "ringside load --verify   (every acknowledged write reads back)"
"$BIN" load --verify "$STATE/demo-writes.jsonl" 2>/dev/null

say "ringside replay verify   (rebuild the whole history, compare every checksum)"
"$BIN" replay verify 2>/dev/null

cat <<'TXT'

Try next, in another terminal (the tools find the running system in .ringside/):
  Dashboard: http://127.0.0.1:9480/   (watch the next commands move the ring; slider: time travel)
  target/release/ringside load --duration 60s --clients 450    # the autoscaler goes to 5 nodes
  target/release/ringside scale 4 --wait 30                    # by hand (the autoscaler has the last word)
  Prometheus: http://127.0.0.1:9490/  (try ringside_collector_ring_unique_client_ips; alerts: /alerts)
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
