//! Rotation without a restart: SIGHUP and `POST /api/v1/admin/reload` re-read the same
//! files — the API key file, the TLS certificate, key and client CA, and the storage
//! keyring. A file with problems leaves what is in use unchanged; the others still reload.

use crate::auth::Auth;
use crate::storage::crypto::Keyring;
use crate::tls::Tls;

/// Everything that can be reloaded, as configured.
#[derive(Clone)]
pub struct Reloadable {
    pub auth: Auth,
    pub tls: Option<Tls>,
    pub storage_keys: Option<Keyring>,
}

/// What one reload did; `None` for what is not configured.
#[derive(Debug)]
pub struct Reloaded {
    /// How many API keys are valid now.
    pub keys: Option<Result<usize, String>>,
    pub tls: Option<Result<(), String>>,
    /// The id of the storage key that now encrypts.
    pub storage_key: Option<Result<String, String>>,
}

impl Reloadable {
    /// Whether anything is configured that a reload would re-read.
    pub fn is_empty(&self) -> bool {
        !self.auth.enabled() && self.tls.is_none() && self.storage_keys.is_none()
    }

    pub fn reload(&self) -> Reloaded {
        Reloaded {
            keys: self.auth.enabled().then(|| self.auth.reload()),
            tls: self.tls.as_ref().map(Tls::reload),
            storage_key: self
                .storage_keys
                .as_ref()
                .map(|k| k.reload().map_err(|e| e.to_string())),
        }
    }
}

impl Reloaded {
    /// Every problem, as `what: why`.
    pub fn errors(&self) -> Vec<String> {
        let keys = self.keys.as_ref().and_then(|r| r.as_ref().err());
        let tls = self.tls.as_ref().and_then(|r| r.as_ref().err());
        let storage = self.storage_key.as_ref().and_then(|r| r.as_ref().err());
        [
            keys.map(|e| format!("API keys: {e}")),
            tls.map(|e| format!("TLS files: {e}")),
            storage.map(|e| format!("storage keyring: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
