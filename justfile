# ringside recipes. `just` lists them; CI (`./dev test`) and people call the same ones.
# Run through ./dev (it installs just, nats-server, ... into .venv/ first):
#   ./dev just <recipe>

set shell := ["bash", "-euo", "pipefail", "-c"]

export RINGSIDE_NATS_SERVER := env("RINGSIDE_NATS_SERVER", justfile_directory() / ".venv/bin/nats-server")

# List the recipes.
default:
    @just --list --unsorted

# Everything CI checks: format, lints, tests.
test: fmt-check clippy test-all

# Check formatting (cargo fmt).
fmt-check:
    cargo fmt --all -- --check

# Format the code.
fmt:
    cargo fmt --all

# Lints, warnings are errors.
clippy:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Run every test (real nats-server from .venv; see testkit/).
test-all *ARGS:
    cargo test --workspace --locked {{ARGS}}

# Run the local demo.
demo:
    cargo build --release --locked -p ringside
    ./scripts/demo.sh

# Benchmarks: `just bench` (all), `just bench ring`, `just bench node --quick`.
bench WHAT="all" *ARGS:
    ./scripts/bench.sh {{WHAT}} {{ARGS}}

# The `ringside` binary with arguments, e.g. `just ringside ring lookup --members a,b k1`.
ringside *ARGS:
    cargo run --quiet --release --locked -p ringside -- {{ARGS}}

# ringside on a local Kind cluster: create it, build and load the image, deploy, wait
# (needs docker or podman, kind and kubectl; docs/kubernetes.md).
up:
    ./scripts/kind.sh up

# Delete the Kind cluster `just up` created.
down:
    ./scripts/kind.sh down

# The fault campaign (docs/reliability.md): ROUNDS rounds of every fault, seeded;
# report in target/faults/report.json.
faults ROUNDS="3" SEED="21":
    RINGSIDE_FAULT_ROUNDS={{ROUNDS}} RINGSIDE_FAULT_SEED={{SEED}} cargo test --locked -p ringside --test faults -- --nocapture

# The soak: one round of faults, then SECONDS of load and churn, every process's RSS
# sampled every 10 s and bounded; report in target/faults/report.json.
soak SECONDS="1800":
    RINGSIDE_SOAK_SECS={{SECONDS}} cargo test --locked -p ringside --test faults -- --nocapture

# The fuzz targets (byte mutation, proptest) with CASES inputs each.
fuzz CASES="200000":
    RINGSIDE_FUZZ_CASES={{CASES}} cargo test --release --locked -p ringside-events --test fuzz
    RINGSIDE_FUZZ_CASES={{CASES}} cargo test --release --locked -p ringside-replay --test fuzz_export
