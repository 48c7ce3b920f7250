#!/usr/bin/env bash
# Builds DoorcodeCoreFFI.xcframework (device + simulator static libraries with
# the generated C header and module map) and the generated Swift into
# Sources/DoorcodeCore/Generated. macOS only: it needs Xcode's xcodebuild and
# lipo, and the Rust iOS targets
# (rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios).
set -euo pipefail
[ "$(uname -s)" = Darwin ] || { echo "build-xcframework.sh runs on macOS only (needs xcodebuild)"; exit 1; }
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
PROFILE=${PROFILE:-mobile}  # size-tuned release, see Cargo.toml [profile.mobile]
BUILD=$PWD/build
rm -rf "$BUILD" DoorcodeCoreFFI.xcframework Sources/DoorcodeCore/Generated
mkdir -p "$BUILD/include" Sources/DoorcodeCore/Generated

for t in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin; do
  (cd "$ROOT" && cargo rustc -p doorcode-ffi --lib --crate-type staticlib --profile "$PROFILE" --target "$t")
done
T=$ROOT/target
DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
mkdir -p "$BUILD/ios-sim"
lipo -create "$T/aarch64-apple-ios-sim/$DIR/libdoorcode_ffi.a" "$T/x86_64-apple-ios/$DIR/libdoorcode_ffi.a" \
  -output "$BUILD/ios-sim/libdoorcode_ffi.a"

# Bindings from the host library (same code, same metadata).
(cd "$ROOT" && cargo build -p doorcode-ffi --profile "$PROFILE" && cargo build -p uniffi-bindgen)
"$T/debug/uniffi-bindgen" generate --no-format \
  --library "$T/$DIR/libdoorcode_ffi.dylib" --language swift --out-dir "$BUILD/gen"
cp "$BUILD/gen/DoorcodeCore.swift" Sources/DoorcodeCore/Generated/
cp "$BUILD/gen/DoorcodeCoreFFI.h" "$BUILD/include/"
cp "$BUILD/gen/DoorcodeCoreFFI.modulemap" "$BUILD/include/module.modulemap"

xcodebuild -create-xcframework \
  -library "$T/aarch64-apple-ios/$DIR/libdoorcode_ffi.a" -headers "$BUILD/include" \
  -library "$BUILD/ios-sim/libdoorcode_ffi.a" -headers "$BUILD/include" \
  -library "$T/aarch64-apple-darwin/$DIR/libdoorcode_ffi.a" -headers "$BUILD/include" \
  -output DoorcodeCoreFFI.xcframework
echo "DoorcodeCoreFFI.xcframework ready; now: swift test (macOS) or add the package in Xcode"
