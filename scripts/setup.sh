#!/usr/bin/env bash
# Installs what a fresh machine lacks to build polybot: the wasm32-wasip2
# target for strategies and cargo-component (the second way to build them).
# Safe to run again: it skips what is already there.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

if ! cargo component --version >/dev/null 2>&1; then
    echo "setup: installing cargo-component 0.21.1 (takes a few minutes once)"
    cargo install --locked cargo-component --version 0.21.1
fi
