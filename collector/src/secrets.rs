//! Secrets come from the environment or from files named in the config, never from the config
//! text itself. This module reads them, and keeps the one secret Vigil may generate itself —
//! the redaction hash key — in the data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_core::HashKey;
use vigil_core::redact::RedactionConfig;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or not UTF-8)")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

/// Reads a secret from `env` or else `file`; surrounding whitespace (a trailing newline) is
/// not part of it. `None` when neither is configured.
pub fn read_secret(env: Option<&str>, file: Option<&Path>) -> Result<Option<Vec<u8>>, SecretError> {
    if let Some(var) = env {
        let value = std::env::var(var).map_err(|_| SecretError::MissingEnv(var.to_owned()))?;
        return Ok(Some(value.trim().as_bytes().to_vec()));
    }
    if let Some(path) = file {
        let bytes = std::fs::read(path).map_err(|source| SecretError::File {
            path: path.to_owned(),
            source,
        })?;
        return Ok(Some(bytes.trim_ascii().to_vec()));
    }
    Ok(None)
}

/// File in the data directory holding the generated redaction key.
pub const GENERATED_KEY_FILE: &str = "redaction.key";

/// The key for `hash` pseudonyms: from `redaction.hash_key_env` / `hash_key_file`, or else
/// generated once (256 random bits, file mode 0600) in the data directory, so pseudonyms stay
/// stable across restarts. Several collectors that must agree on pseudonyms share a key
/// through env or file.
pub fn redaction_key(config: &RedactionConfig, data_dir: &Path) -> Result<HashKey, SecretError> {
    let configured = read_secret(
        config.hash_key_env.as_deref(),
        config.hash_key_file.as_deref(),
    )?;
    let (bytes, what) = match configured {
        Some(bytes) => (bytes, "redaction hash key".to_owned()),
        None => {
            let path = data_dir.join(GENERATED_KEY_FILE);
            (load_or_generate(&path)?, path.display().to_string())
        }
    };
    HashKey::new(&bytes).map_err(|message| SecretError::Invalid { what, message })
}

fn load_or_generate(path: &Path) -> Result<Vec<u8>, SecretError> {
    match std::fs::read(path) {
        Ok(bytes) => return Ok(bytes.trim_ascii().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SecretError::File {
                path: path.to_owned(),
                source,
            });
        }
    }
    let create = |source| SecretError::Create {
        path: path.to_owned(),
        source,
    };
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| create(std::io::Error::other(e)))?;
    let key = hex::encode(raw);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(create)?;
    file.write_all(key.as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)?;
    tracing::info!(path = %path.display(), "generated the redaction hash key");
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let config = RedactionConfig::default();
        redaction_key(&config, dir.path()).unwrap();
        let path = dir.path().join(GENERATED_KEY_FILE);
        let first = std::fs::read(&path).unwrap();
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        redaction_key(&config, dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }

    #[test]
    fn key_from_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        std::fs::write(&file, "short\n").unwrap();
        let config = RedactionConfig {
            hash_key_file: Some(file.clone()),
            ..RedactionConfig::default()
        };
        let err = redaction_key(&config, dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        redaction_key(&config, dir.path()).unwrap();
        assert!(!dir.path().join(GENERATED_KEY_FILE).exists());
    }

    #[test]
    fn missing_env_var_is_an_error() {
        let config = RedactionConfig {
            hash_key_env: Some("VIGIL_TEST_SURELY_UNSET_KEY".into()),
            ..RedactionConfig::default()
        };
        let err = redaction_key(&config, Path::new("/nonexistent")).unwrap_err();
        assert!(
            err.to_string().contains("VIGIL_TEST_SURELY_UNSET_KEY"),
            "{err}"
        );
    }
}
