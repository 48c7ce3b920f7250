#!/usr/bin/env bash
# Builds libdoorcode_ffi.so for Android ABIs into src/main/jniLibs and
# generates the Kotlin bindings (with android = true) into
# build/generated/uniffi/kotlin. Needs the Android NDK (ANDROID_NDK_HOME),
# `cargo install cargo-ndk`, and the Rust Android targets
# (rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android).
# Not runnable on the CI machine: there is no NDK there.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
PROFILE=${PROFILE:-mobile}  # size-tuned release, see Cargo.toml [profile.mobile]
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the NDK}"
HERE=$PWD
mkdir -p build
(cd "$ROOT" && cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o "$HERE/src/main/jniLibs" \
  build -p doorcode-ffi --profile "$PROFILE")
(cd "$ROOT" && cargo build -p uniffi-bindgen)
# The Android variant of the bindings imports android.os.Build for cleaner
# ownership tracking; the JVM tests use the default variant.
sed 's/^\[bindings.kotlin\]/[bindings.kotlin]\nandroid = true/' "$ROOT/bindings/uniffi.toml" > build/uniffi-android.toml
rm -rf build/generated/uniffi/kotlin
"$ROOT/target/debug/uniffi-bindgen" generate --no-format --config build/uniffi-android.toml \
  --library "src/main/jniLibs/arm64-v8a/libdoorcode_ffi.so" --language kotlin --out-dir build/generated/uniffi/kotlin
echo "jniLibs and generated Kotlin ready; now: gradle assembleRelease"
