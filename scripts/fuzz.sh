#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 20)
#   FUZZ_TARGETS="manifest envelope" scripts/fuzz.sh 600
#
# Fails when any target finds a crash, a panic, a leak or a hang (an input
# slower than FUZZ_TIMEOUT seconds, default 10), and prints where the input
# was saved and the command that reproduces it. Each run starts from a
# temporary copy of the committed seeds (fuzz/corpus/<target>), so the
# repository stays clean; set FUZZ_KEEP_CORPUS=1 to keep the grown corpus
# (it is printed). Only stable Rust exists here: cargo-fuzz's nightly flags
# are allowed through RUSTC_BOOTSTRAP=1. See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-20}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
SANITIZER="${FUZZ_SANITIZER:-address}"
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

step() { printf '\n==> %s\n' "$*"; }

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# The same flags for build and run, so run does not rebuild. Four codegen
# units instead of cargo-fuzz's one: the first build is much shorter on a
# small machine and the targets are barely slower.
#
# The instrumented build lives outside the checkout (FUZZ_TARGET_DIR, default
# ~/.cache/doorcode/fuzz-target): every dependency is rebuilt with coverage
# and sanitizer flags, which takes 10-25 minutes cold on two cores, so CI and
# fresh clones reuse it the way a CI cache would. A new machine just builds it.
target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/doorcode/fuzz-target}"
mkdir -p "$target_dir"
flags=(--sanitizer "$SANITIZER" --debug-assertions --codegen-units 4 --target-dir "$target_dir")

step "building the fuzz targets (sanitizer: $SANITIZER)"
cargo fuzz build "${flags[@]}"

work="$(mktemp -d "${TMPDIR:-/tmp}/doorcode-fuzz.XXXXXX")"
if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
  trap 'rm -rf "$work"' EXIT
fi
failed=()
for t in $targets; do
  step "fuzzing $t for ${SECS}s"
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  cp fuzz/corpus/"$t"/* "$work/$t/" 2>/dev/null || true
  before="$(ls fuzz/artifacts/"$t")"
  if ! cargo fuzz run "${flags[@]}" "$t" "$work/$t" -- \
      -max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
      -print_final_stats=1 2>"$work/$t.log"; then
    failed+=("$t")
    tail -n 60 "$work/$t.log" >&2
    for a in $(ls fuzz/artifacts/"$t"); do
      if ! grep -qxF "$a" <<<"$before"; then
        echo "!!! $t: input saved at fuzz/artifacts/$t/$a" >&2
        echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t fuzz/artifacts/$t/$a" >&2
      fi
    done
  else
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$work/$t.log" || true
    echo "corpus: $(ls "$work/$t" | wc -l) inputs ($work/$t)"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  step "FUZZING FOUND PROBLEMS in: ${failed[*]}"
  exit 1
fi
step "fuzzing: no crash in $(wc -w <<<"$targets") targets, ${SECS}s each"
