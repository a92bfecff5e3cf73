#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test of the workspace
# (unit tests, the end-to-end suites in tests/, and a cargo-component build of
# a strategy). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --tests
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
