//! Where a fuzz target keeps its files (a module of the targets that use it,
//! not a target of its own).

/// A new temporary directory named after `prefix`, on tmpfs when there is
/// one: the stores under test sync every write, and on a disk each sync
/// would cost the fuzzer more than the input it checks.
pub fn dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap()
}
