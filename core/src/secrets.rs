//! Platform secrets (the device key, the bearer token) live behind this trait:
//! Android Keystore or iOS Keychain on phones, a file store on desktops and JVMs.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

pub trait SecretStore: Send + Sync {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SecretError>;
    fn put(&self, name: &str, value: &[u8]) -> Result<(), SecretError>;
    fn delete(&self, name: &str) -> Result<(), SecretError>;
}

/// Names of the secrets the core keeps.
pub const DEVICE_KEY: &str = "device-key";
pub const DEVICE_TOKEN: &str = "device-token";

/// One file per secret, mode 0600, written atomically.
pub struct FileSecretStore {
    dir: PathBuf,
}

impl FileSecretStore {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SecretError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| SecretError(format!("cannot create secret dir {}: {e}", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf, SecretError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SecretError(format!("bad secret name {name:?}")));
        }
        Ok(self.dir.join(name))
    }
}

/// Writes `bytes` to `path` via a temp file and rename, with fsyncs, mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl SecretStore for FileSecretStore {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SecretError> {
        match std::fs::read(self.path(name)?) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretError(format!("cannot read secret {name}: {e}"))),
        }
    }

    fn put(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        write_private_file(&self.path(name)?, value)
            .map_err(|e| SecretError(format!("cannot write secret {name}: {e}")))
    }

    fn delete(&self, name: &str) -> Result<(), SecretError> {
        match std::fs::remove_file(self.path(name)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SecretError(format!("cannot delete secret {name}: {e}"))),
        }
    }
}

/// In memory, for tests.
#[derive(Default)]
pub struct MemorySecretStore(Mutex<HashMap<String, Vec<u8>>>);

impl SecretStore for MemorySecretStore {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SecretError> {
        let m = self.0.lock().map_err(|_| SecretError("poisoned".into()))?;
        Ok(m.get(name).cloned())
    }

    fn put(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        let mut m = self.0.lock().map_err(|_| SecretError("poisoned".into()))?;
        m.insert(name.to_string(), value.to_vec());
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), SecretError> {
        let mut m = self.0.lock().map_err(|_| SecretError("poisoned".into()))?;
        m.remove(name);
        Ok(())
    }
}
