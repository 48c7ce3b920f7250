#!/usr/bin/env bash
# The bindings' checks: builds libdoorcode_ffi and the pinned uniffi-bindgen,
# generates Kotlin and Swift, compiles the Kotlin with -Werror and runs the JVM
# tests against the real library and a real `doorcode serve`, then parse-checks
# every Swift file and syntax-checks the generated C header. No Swift compiler
# runs here (there is none on Linux CI); the Swift checks are parse checks.
# On a fresh machine it installs what it lacks into .tools/ (and JNA/JUnit via
# apt); when all is there it only builds and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
OUT=$ROOT/target/bindings
KOTLIN_VERSION=2.4.20
mkdir -p "$TOOLS" "$OUT"

step() { printf '\n==> %s\n' "$*"; }

step "bindings: tools (JNA + JUnit from apt, kotlinc from npm, tree-sitter-swift from PyPI)"
if ! dpkg -s libjna-java libjna-jni junit4 >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libjna-java libjna-jni junit4 >/dev/null
fi
KOTLINC_HOME=$TOOLS/kotlinc/package
if [ ! -x "$KOTLINC_HOME/bin/kotlinc" ] || ! grep -q "$KOTLIN_VERSION" "$KOTLINC_HOME/build.txt" 2>/dev/null; then
  rm -rf "$TOOLS/kotlinc" && mkdir -p "$TOOLS/kotlinc"
  (cd "$TOOLS/kotlinc" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null \
    && tar -xzf "kotlin-compiler-$KOTLIN_VERSION.tgz" && rm "kotlin-compiler-$KOTLIN_VERSION.tgz")
  chmod +x "$KOTLINC_HOME/bin/"*
fi
VENV=$TOOLS/venv
if ! "$VENV/bin/python" -c "import tree_sitter, tree_sitter_swift" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q tree-sitter tree-sitter-swift
fi

step "bindings: libdoorcode_ffi, the doorcode binary and the pinned uniffi-bindgen (the test run's workspace build)"
# The same feature set as `cargo test --workspace --all-targets` (scripts/test.sh):
# after that run this builds nothing; a `-p` build would rebuild ~30 crates.
cargo build --workspace --all-targets --locked
LIB=$ROOT/target/debug/libdoorcode_ffi.so
BINDGEN=$ROOT/target/debug/uniffi-bindgen

step "bindings: generate Kotlin and Swift"
rm -rf "$OUT/kotlin" "$OUT/swift"
"$BINDGEN" generate --no-format --library "$LIB" --language kotlin --out-dir "$OUT/kotlin"
"$BINDGEN" generate --no-format --library "$LIB" --language swift --out-dir "$OUT/swift"

step "bindings: compile the Kotlin (generated + facade + tests) with -Werror"
K=$KOTLINC_HOME/lib
CP=/usr/share/java/jna.jar:$K/kotlinx-coroutines-core-jvm.jar:/usr/share/java/junit4.jar:$K/kotlin-test.jar:$K/kotlin-test-junit.jar
mapfile -t KT < <(find "$OUT/kotlin" android/src/main/kotlin android/src/test/kotlin -name '*.kt' | sort)
rm -f "$OUT/tests.jar"
if ! "$KOTLINC_HOME/bin/kotlinc" -Werror -jvm-target 17 -cp "$CP" -d "$OUT/tests.jar" "${KT[@]}" >"$OUT/kotlinc.log" 2>&1; then
  cat "$OUT/kotlinc.log"; echo "Kotlin compilation failed"; exit 1
fi
cat "$OUT/kotlinc.log"

step "bindings: JVM tests against the real library and a real doorcode serve"
java -Djna.library.path="$(dirname "$LIB")" \
  -Ddoorcode.server="$ROOT/target/debug/doorcode" \
  -Ddoorcode.vectors="${DOORCODE_VECTORS:-$ROOT/../shared/vectors/protocol-v1.json}" \
  -cp "$OUT/tests.jar:$CP:$K/kotlin-stdlib.jar:/usr/share/java/hamcrest.jar" dev.doorcode.core.RunTestsKt

step "bindings: Swift parse checks (tree-sitter-swift; no Swift compiler here) and the C header"
mapfile -t SWIFT < <(find "$OUT/swift" ios -name '*.swift' | sort)
"$VENV/bin/python" scripts/swift-parse-check.py "${SWIFT[@]}"
# "#pragma once in main file" is the only warning gcc gives for a header
# checked on its own; errors fail the run.
if ! cc -fsyntax-only -D_Nullable= -D_Nonnull= -x c "$OUT/swift/DoorcodeCoreFFI.h" 2>"$OUT/cc.log"; then
  cat "$OUT/cc.log"; echo "C header check failed"; exit 1
fi
echo "C header OK: $OUT/swift/DoorcodeCoreFFI.h"
