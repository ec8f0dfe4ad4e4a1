#!/bin/sh
# Runs the benchmarks in release mode (cargo's bench profile); called by `just bench WHAT`.
#
#   scripts/bench.sh             every benchmark below, in order
#   scripts/bench.sh all         the same
#   scripts/bench.sh ring [ARGS] one benchmark; ARGS go to it (e.g. --quick)
#
# Each benchmark prints a table and writes target/bench/<name>.json; see
# docs/benchmarks.md. To add one: a run_<name> function and its name in BENCHES.
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench"

# Every benchmark this script knows, in the order `all` runs them.
BENCHES="ring events replay reducer node collector bridge"

run_ring() {
    cargo bench --locked -p ringside-ring --bench ring -- --json "$OUT/ring.json" "$@"
}

run_events() {
    cargo bench --locked -p ringside-events --bench events -- --json "$OUT/events.json" "$@"
}

run_replay() {
    cargo bench --locked -p ringside --bench replay -- --json "$OUT/replay.json" "$@"
}

run_reducer() {
    # It runs the release binary as a child process, so build that first.
    cargo build --release --locked -p ringside
    cargo bench --locked -p ringside-reducer --bench reducer -- \
        --ringside "${CARGO_TARGET_DIR:-$ROOT/target}/release/ringside" --json "$OUT/reducer.json" "$@"
}

run_node() {
    cargo bench --locked -p ringside-node --bench node -- --json "$OUT/node.json" "$@"
}

run_collector() {
    cargo bench --locked -p ringside-collector --bench collector -- --json "$OUT/collector.json" "$@"
}

run_bridge() {
    cargo bench --locked -p ringside-bridge --bench bridge -- --json "$OUT/bridge.json" "$@"
}

run() {
    name=$1
    shift
    case "$name" in
        ring) run_ring "$@" ;;
        events) run_events "$@" ;;
        replay) run_replay "$@" ;;
        reducer) run_reducer "$@" ;;
        node) run_node "$@" ;;
        collector) run_collector "$@" ;;
        bridge) run_bridge "$@" ;;
        *)
            echo "bench: unknown benchmark '$name' (known: $BENCHES; or all)" >&2
            exit 2
            ;;
    esac
}

what=${1:-all}
[ $# -eq 0 ] || shift
if [ "$what" = all ]; then
    [ $# -eq 0 ] || { echo "bench: arguments only go to a single benchmark" >&2; exit 2; }
    for name in $BENCHES; do
        run "$name"
    done
else
    run "$what" "$@"
fi
