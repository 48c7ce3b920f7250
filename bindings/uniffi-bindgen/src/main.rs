//! `uniffi-bindgen generate --library target/debug/libdoorcode_ffi.so ...`
fn main() {
    uniffi::uniffi_bindgen_main()
}
