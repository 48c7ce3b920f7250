#!/usr/bin/env bash
# The figures of docs/BENCHMARKS.md "Server under load": a release build, then
# RUNS back-to-back runs of doorcode-load (default 3) with the given options
# (default: 50 couriers, SQLite and PostgreSQL). Each run's table and the load
# average go to target/bench-load/. PostgreSQL from DOORCODE_TEST_PG.
#
#   scripts/bench-load.sh                      # 3 runs, --couriers 50 --backend both
#   RUNS=1 scripts/bench-load.sh --couriers 200
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
[ $# -gt 0 ] || set -- --couriers 50 --backend both
cargo build --release --locked -p doorcode-tools -p doorcode-loadgen
out=target/bench-load
mkdir -p "$out"
for i in $(seq 1 "$RUNS"); do
  echo "== run $i of $RUNS: doorcode-load $* (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  target/release/doorcode-load "$@" | tee "$out/run-$i.md"
  echo "load average after run $i: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/run-$i.md" >&2
done
