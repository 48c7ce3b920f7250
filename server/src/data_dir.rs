//! Modes of the data directory: the directory and every directory under it
//! 0700, every file 0600, whatever the umask and whether they existed before
//! (DESIGN "The edges of the server"). It holds the code key, token hashes,
//! signing keys, the SQLite database with its `-wal` and `-shm`, and notices
//! with codes in them. An existing directory under umask 022 used to give a
//! 0644 `doorcode.db` in a 0755 directory.
//!
//! `secure` runs at start, before anything is read, and again once the
//! database is open; anything it cannot set stops the start with the path
//! and what to do. Symbolic links are left alone (their targets are not ours
//! to change). New files are created private from the start
//! (`write_private_file`, [`create_private_file`], [`create_private_dir`]).

use std::io;
use std::path::{Path, PathBuf};

/// Why the data directory could not be made private.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path}: {err}; the data directory and everything in it must belong to the user running doorcode (fix the owner, or point --data-dir elsewhere)"
)]
pub struct ModeError {
    pub path: PathBuf,
    pub err: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> ModeError + '_ {
    move |err| ModeError {
        path: path.to_path_buf(),
        err,
    }
}

/// Creates `dir` (and its parents) if missing, then sets 0700 on it and on
/// every directory below, and 0600 on every file below.
pub fn secure(dir: &Path) -> Result<(), ModeError> {
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    secure_tree(dir, 0)
}

/// Directories deeper than this are not walked (the server makes two levels).
const MAX_DEPTH: usize = 8;

fn secure_tree(dir: &Path, depth: usize) -> Result<(), ModeError> {
    set_mode(dir, 0o700)?;
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // Removed meanwhile (another node shares the directory).
        Err(e) if e.kind() == io::ErrorKind::NotFound && depth > 0 => return Ok(()),
        Err(e) => return Err(at(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(at(dir))?;
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(&path)(e)),
        };
        if kind.is_dir() {
            secure_tree(&path, depth + 1)?;
        } else if kind.is_file() {
            set_mode(&path, 0o600)?;
        }
    }
    Ok(())
}

/// 0600 on a SQLite database and its `-wal`, `-shm` and `-journal` files,
/// where they exist (a database may live outside the data directory).
pub fn secure_sqlite(db: &Path) -> Result<(), ModeError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => set_mode(&p, 0o600)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(&p)(e)),
        }
    }
    Ok(())
}

/// Creates an empty file with mode 0600 if it does not exist, so a library
/// that creates it later (SQLite) never makes it world-readable first.
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
pub fn create_private_file(path: &Path) -> Result<(), ModeError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o.open(path).map(drop).map_err(at(path))
}

/// `create_dir_all` with mode 0700 for what it creates.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(path)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), ModeError> {
    use std::os::unix::fs::PermissionsExt as _;
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // A temporary file renamed away meanwhile (another node writing
        // notices into a shared directory): nothing left to protect.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at(path)(e)),
    };
    if m.permissions().mode() & 0o7777 == mode {
        return Ok(());
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at(path)(e)),
    }
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), ModeError> {
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_open_tree_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("notices")).unwrap();
        std::fs::write(dir.join("doorcode.db"), b"").unwrap();
        std::fs::write(dir.join("notices/1.json"), b"{}").unwrap();
        for p in [&dir, &dir.join("notices")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in [dir.join("doorcode.db"), dir.join("notices/1.json")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("notices")), 0o700);
        assert_eq!(mode(&dir.join("doorcode.db")), 0o600);
        assert_eq!(mode(&dir.join("notices/1.json")), 0o600);
    }
}
