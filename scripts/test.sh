#!/usr/bin/env bash
# Runs every test of the project, installing what a new machine lacks first.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain checks: rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (unit, integration, vectors, properties, crash)"
cargo test --workspace --all-targets --locked

step "bindings: Kotlin on the JVM against the real library and server, Swift parse checks"
./scripts/test-bindings.sh

step "all tests passed"
