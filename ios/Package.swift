// swift-tools-version:5.9
// The doorcode handset core for iOS: the Rust library as an XCFramework
// (built by build-xcframework.sh on macOS) plus the generated Swift bindings
// and a thin hand-written layer (Keychain secret store).
import PackageDescription

let package = Package(
    name: "DoorcodeCore",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "DoorcodeCore", targets: ["DoorcodeCore"]),
    ],
    targets: [
        // libdoorcode_ffi.a per platform with the C header and module map
        // of module DoorcodeCoreFFI.
        .binaryTarget(name: "DoorcodeCoreFFI", path: "DoorcodeCoreFFI.xcframework"),
        // Generated/DoorcodeCore.swift (uniffi) + KeychainSecretStore.swift.
        .target(
            name: "DoorcodeCore",
            dependencies: ["DoorcodeCoreFFI"],
            path: "Sources/DoorcodeCore"
        ),
        .testTarget(
            name: "DoorcodeCoreTests",
            dependencies: ["DoorcodeCore"],
            path: "Tests/DoorcodeCoreTests"
        ),
    ]
)
