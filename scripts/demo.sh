#!/usr/bin/env bash
# Builds everything (host and strategies) and runs the momentum strategy on the
# built-in simulated market for 100,000 events with paper execution.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -p polybot-host
cargo build --release --target wasm32-wasip2 -p momentum -p faulty
exec target/release/polybot-host run \
    --strategy target/wasm32-wasip2/release/momentum.wasm \
    --speed max --events 100000 "$@"
