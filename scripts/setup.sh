#!/usr/bin/env bash
# Installs what a fresh machine lacks to build polybot: the wasm32-wasip2
# target for strategies and cargo-component (the second way to build them).
# Safe to run again: it skips what is already there.
set -euo pipefail

# wasm32-wasip2 for `cargo build --target wasm32-wasip2`; wasm32-wasip1 is
# what `cargo component build` compiles for before adapting to a component.
for target in wasm32-wasip2 wasm32-wasip1; do
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "setup: adding the $target target"
        rustup target add "$target"
    fi
done

if ! cargo component --version >/dev/null 2>&1; then
    echo "setup: installing cargo-component 0.21.1 (takes a few minutes once)"
    cargo install --locked cargo-component --version 0.21.1
fi
