//! The platform's secret store (Android Keystore, iOS Keychain) as a
//! foreign trait, adapted to core's `SecretStore`.

use doorcode_core::secrets::SecretError;
use std::sync::Arc;

/// What a foreign `SecretStore` throws.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SecretStoreError {
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for SecretStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: e.reason }
    }
}

/// Where the device key and token live: Android Keystore, iOS Keychain.
/// Implemented by the app; names are short ASCII identifiers.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// The stored bytes, or null/nil when nothing is stored under `name`.
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SecretStoreError>;
    fn put(&self, name: String, value: Vec<u8>) -> Result<(), SecretStoreError>;
    /// Deleting a missing name is not an error.
    fn delete(&self, name: String) -> Result<(), SecretStoreError>;
}

/// Adapts the foreign store to the core's trait.
pub(crate) struct ForeignSecrets(pub(crate) Arc<dyn SecretStore>);

fn secret_err(e: SecretStoreError) -> SecretError {
    SecretError(e.to_string())
}

impl doorcode_core::secrets::SecretStore for ForeignSecrets {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SecretError> {
        self.0.get(name.to_string()).map_err(secret_err)
    }
    fn put(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        self.0
            .put(name.to_string(), value.to_vec())
            .map_err(secret_err)
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.0.delete(name.to_string()).map_err(secret_err)
    }
}
