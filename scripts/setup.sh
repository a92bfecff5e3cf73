#!/usr/bin/env bash
# Installs what a fresh machine lacks to build polybot. Safe to run again: it
# skips what is already there.
#
#   scripts/setup.sh          what the demo needs: the wasm32-wasip2 target
#                             strategies are built for
#   scripts/setup.sh --tests  also what the test suite needs: the wasm32-wasip1
#                             target and cargo-component (one suite builds a
#                             strategy with `cargo component build`)
set -euo pipefail

targets=(wasm32-wasip2)
tests=false
case "${1:-}" in
    --tests) tests=true; targets+=(wasm32-wasip1) ;;
    "") ;;
    *) echo "setup: unknown option $1 (use --tests)" >&2; exit 2 ;;
esac

for target in "${targets[@]}"; do
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "setup: adding the $target target"
        rustup target add "$target"
    fi
done

if $tests && ! cargo component --version >/dev/null 2>&1; then
    echo "setup: installing cargo-component 0.21.1 (takes a few minutes once)"
    cargo install --locked cargo-component --version 0.21.1
fi

# The dashboard's browser test drives headless Chromium; it skips with a note
# when none is installed.
if $tests && ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing chromium (for the dashboard's browser test)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
    else
        echo "setup: no chromium; install it (apt-get install chromium) to run the dashboard's browser test"
    fi
fi
