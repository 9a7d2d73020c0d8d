//! Encryption at rest: the storage keyring, AES-256-GCM sealing of WAL frames, and Parquet
//! modular encryption properties.
//!
//! Keys come from `[storage.encryption] keys_env` or `keys_file`, never from the config text.
//! The keyring lists `id:hex` entries (64 hex digits, 256 bits each), newest first, separated
//! by newlines or commas; `#` starts a comment. The first key encrypts everything written from
//! then on; every listed key decrypts. Rotation is: put a new key first, reload (SIGHUP,
//! `POST /api/v1/admin/reload` or a restart), and keep the old key listed until retention has
//! removed the files it encrypts. Every file records the id of its key (a WAL segment in its
//! header, a Parquet file as its footer key metadata), so the right key is found per file.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::Deserialize;

use crate::secrets::{SecretError, read_secret};

/// Length of a storage key: AES-256.
const KEY_LEN: usize = 32;
/// Longest key id; ids are stored in every file header and footer.
const MAX_ID_LEN: usize = 64;
/// Prefix of the Parquet footer key metadata, so a foreign key metadata is recognised.
const PARQUET_KEY_METADATA_PREFIX: &str = "vigil-storage-key:";
/// Bytes a sealed WAL frame adds: the nonce in front and the GCM tag at the end.
const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// `[storage.encryption]`: where the keyring comes from. Encryption is on when either is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Environment variable holding the keyring.
    pub keys_env: Option<String>,
    /// File holding the keyring (mode 0600, outside the data directory).
    pub keys_file: Option<PathBuf>,
}

impl EncryptionConfig {
    pub fn enabled(&self) -> bool {
        self.keys_env.is_some() || self.keys_file.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("storage keyring: {0}")]
    Invalid(String),
    #[error(
        "{what} is encrypted with storage key `{id}`, which is not in the keyring; \
         add that key back to the keyring to read it"
    )]
    UnknownKey { what: String, id: String },
    #[error(
        "{0} failed authentication: it was altered, or the key under its id is not the one that wrote it"
    )]
    Tampered(String),
}

/// One storage key.
pub struct StorageKey {
    id: Arc<str>,
    bytes: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageKey").field("id", &self.id).finish()
    }
}

impl Drop for StorageKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

impl StorageKey {
    fn new(id: &str, bytes: [u8; KEY_LEN]) -> Result<Self, CryptoError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| CryptoError::Invalid(format!("key `{id}` is not a valid AES-256 key")))?;
        Ok(Self {
            id: id.into(),
            bytes,
            aead: LessSafeKey::new(unbound),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` bound to `aad`: `nonce | ciphertext | tag`. Nonces are random
    /// (96 bits), which is safe far beyond the number of frames one key ever seals.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| CryptoError::Invalid(format!("no randomness for a nonce: {e}")))?;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (_, body) = out.split_at_mut(NONCE_LEN);
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| CryptoError::Invalid("AES-GCM refused to seal".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts what [`Self::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, CryptoError> {
        let tampered = || CryptoError::Tampered(what.to_owned());
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN).ok_or_else(tampered)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| tampered())?;
        let mut body = body.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| tampered())?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }

    /// Parquet modular encryption (AES-GCM) of footer and every column with this key; the
    /// footer key metadata names the key so readers find it in the keyring.
    pub fn parquet_encryption(&self) -> Result<Arc<FileEncryptionProperties>, ParquetError> {
        FileEncryptionProperties::builder(self.bytes.to_vec())
            .with_footer_key_metadata(format!("{PARQUET_KEY_METADATA_PREFIX}{}", self.id).into())
            .build()
    }
}

/// The keys of one keyring; the first encrypts.
#[derive(Debug)]
pub struct KeySet {
    active: StorageKey,
    older: Vec<StorageKey>,
}

impl KeySet {
    /// Parses `id:hex` entries separated by newlines or commas; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let mut keys: Vec<StorageKey> = Vec::new();
        let entries = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for entry in entries {
            let (id, hex_key) = entry.split_once(':').ok_or_else(|| {
                CryptoError::Invalid("each key is written `id:hex` (64 hex digits)".into())
            })?;
            let id = id.trim();
            let valid_id = !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_id {
                return Err(CryptoError::Invalid(format!(
                    "key id `{id}`: use 1 to {MAX_ID_LEN} letters, digits, `.`, `_` or `-`"
                )));
            }
            let mut bytes = [0u8; KEY_LEN];
            hex::decode_to_slice(hex_key.trim(), &mut bytes).map_err(|_| {
                CryptoError::Invalid(format!("key `{id}` is not 64 hex digits (256 bits)"))
            })?;
            if keys.iter().any(|k| k.id() == id) {
                return Err(CryptoError::Invalid(format!(
                    "key id `{id}` is listed twice"
                )));
            }
            keys.push(StorageKey::new(id, bytes)?);
        }
        let mut keys = keys.into_iter();
        let active = keys
            .next()
            .ok_or_else(|| CryptoError::Invalid("it lists no key".into()))?;
        Ok(Self {
            active,
            older: keys.collect(),
        })
    }

    /// The key that encrypts new files.
    pub fn active(&self) -> &StorageKey {
        &self.active
    }

    pub fn get(&self, id: &str) -> Option<&StorageKey> {
        self.keys().find(|k| k.id() == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys().map(StorageKey::id)
    }

    fn keys(&self) -> impl Iterator<Item = &StorageKey> {
        std::iter::once(&self.active).chain(&self.older)
    }
}

/// The live keyring: reloadable, shared by the WAL writer, the compactor and the query engine.
#[derive(Clone)]
pub struct Keyring {
    config: EncryptionConfig,
    current: Lookup,
    /// Built once: its key retriever reads `current`, so it follows reloads.
    decryption: Arc<FileDecryptionProperties>,
}

/// The keys in force, swapped whole on reload; Parquet readers look keys up here by id.
#[derive(Clone)]
struct Lookup(Arc<RwLock<Arc<KeySet>>>);

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys().ids().map(str::to_owned).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

impl Keyring {
    /// Loads the configured keyring; `None` when encryption at rest is not configured.
    pub fn load(config: &EncryptionConfig) -> Result<Option<Self>, CryptoError> {
        if !config.enabled() {
            return Ok(None);
        }
        let current = Lookup(Arc::new(RwLock::new(Arc::new(read(config)?))));
        let decryption = FileDecryptionProperties::with_key_retriever(Arc::new(current.clone()))
            .build()
            .map_err(|e| CryptoError::Invalid(format!("parquet decryption: {e}")))?;
        Ok(Some(Self {
            config: config.clone(),
            current,
            decryption,
        }))
    }

    /// Re-reads the keyring; on any problem the keys in use stay. Returns the active key id.
    pub fn reload(&self) -> Result<String, CryptoError> {
        let keys = read(&self.config)?;
        let active = keys.active().id().to_owned();
        *self.current.0.write() = Arc::new(keys);
        Ok(active)
    }

    /// The keys now in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.current.keys()
    }

    /// Parquet decryption that looks each file's key up by the id in its footer.
    pub fn parquet_decryption(&self) -> Arc<FileDecryptionProperties> {
        Arc::clone(&self.decryption)
    }
}

impl Lookup {
    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.0.read())
    }
}

fn read(config: &EncryptionConfig) -> Result<KeySet, CryptoError> {
    let bytes = read_secret(config.keys_env.as_deref(), config.keys_file.as_deref())?
        .ok_or_else(|| CryptoError::Invalid("neither keys_env nor keys_file is set".into()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CryptoError::Invalid("the keyring is not UTF-8 text".into()))?;
    KeySet::parse(&text)
}

impl KeyRetriever for Lookup {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = std::str::from_utf8(key_metadata)
            .ok()
            .and_then(|m| m.strip_prefix(PARQUET_KEY_METADATA_PREFIX))
            .ok_or_else(|| {
                ParquetError::General(
                    "the parquet file was encrypted by something other than vigil".into(),
                )
            })?;
        let keys = self.keys();
        let key = keys.get(id).ok_or_else(|| {
            let unknown = CryptoError::UnknownKey {
                what: "the parquet file".into(),
                id: id.to_owned(),
            };
            ParquetError::General(unknown.to_string())
        })?;
        Ok(key.bytes.to_vec())
    }
}

/// A fresh random key entry, `id:hex`, for `vigil keys storage`.
pub fn generate_entry(id: &str) -> Result<String, CryptoError> {
    let mut bytes = [0u8; KEY_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| CryptoError::Invalid(format!("no randomness for a key: {e}")))?;
    let entry = format!("{id}:{}", hex::encode(bytes));
    KeySet::parse(&entry)?;
    Ok(entry)
}

/// Small files beside WAL and Parquet (the detector's state, the webhook outboxes), sealed with
/// the active storage key when encryption at rest is on: `VGSEALED` | key id length (u8) |
/// key id | nonce | ciphertext | tag, bound to the file's purpose. Without a keyring the
/// payload is written as it is, and plain files stay readable once encryption is turned on.
#[derive(Clone, Default)]
pub struct FileSealer {
    keyring: Option<Keyring>,
}

const SEALED_MAGIC: &[u8; 8] = b"VGSEALED";

impl FileSealer {
    pub fn new(keyring: Option<Keyring>) -> Self {
        Self { keyring }
    }

    pub fn seal(&self, purpose: &[u8], payload: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        let Some(keyring) = &self.keyring else {
            return Ok(payload);
        };
        let keys = keyring.keys();
        let key = keys.active();
        let id = key.id().as_bytes();
        let id_len = u8::try_from(id.len())
            .map_err(|_| CryptoError::Invalid(format!("key id `{}` is too long", key.id())))?;
        let mut out = SEALED_MAGIC.to_vec();
        out.push(id_len);
        out.extend_from_slice(id);
        out.extend(key.seal(purpose, &payload)?);
        Ok(out)
    }

    /// The payload of what [`Self::seal`] wrote for `purpose`; `what` names the file in errors.
    pub fn open(&self, purpose: &[u8], bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, CryptoError> {
        let Some(rest) = bytes.strip_prefix(SEALED_MAGIC.as_slice()) else {
            return Ok(bytes);
        };
        let truncated = || CryptoError::Tampered(what.to_owned());
        let (&id_len, rest) = rest.split_first().ok_or_else(truncated)?;
        let (id, sealed) = rest
            .split_at_checked(usize::from(id_len))
            .ok_or_else(truncated)?;
        let id = std::str::from_utf8(id).map_err(|_| truncated())?;
        let Some(keyring) = &self.keyring else {
            return Err(CryptoError::Invalid(format!(
                "{what} is encrypted with key `{id}` but no storage keyring is configured \
                 ([storage.encryption])"
            )));
        };
        let keys = keyring.keys();
        let key = keys.get(id).ok_or_else(|| CryptoError::UnknownKey {
            what: what.to_owned(),
            id: id.to_owned(),
        })?;
        key.open(purpose, sealed, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    #[test]
    fn keyring_text_lists_newest_first() {
        let keys = KeySet::parse(&format!(
            "# rotated 2026-11\nnew:{K2}\n\nold:{K1} # retired\n"
        ))
        .unwrap();
        assert_eq!(keys.active().id(), "new");
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["new", "old"]);
        let env_style = KeySet::parse(&format!("a:{K1},b:{K2}")).unwrap();
        assert_eq!(env_style.ids().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn bad_keyrings_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "no key"),
            ("k1", "id:hex"),
            (&format!("k1:{}", &K1[..60]) as &str, "64 hex"),
            (&format!("bad id:{K1}"), "key id"),
            (&format!("k:{K1}\nk:{K2}"), "twice"),
        ] {
            let err = KeySet::parse(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn sealed_frames_open_only_with_their_key_and_context() {
        let keys = KeySet::parse(&format!("a:{K1}\nb:{K2}")).unwrap();
        let (a, b) = (keys.get("a").unwrap(), keys.get("b").unwrap());
        let sealed = a.seal(b"segment 1 frame 12", b"secret payload").unwrap();
        assert_eq!(sealed.len(), 14 + SEAL_OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            a.open(b"segment 1 frame 12", &sealed, "frame").unwrap(),
            b"secret payload"
        );
        assert!(a.open(b"segment 1 frame 13", &sealed, "frame").is_err());
        assert!(b.open(b"segment 1 frame 12", &sealed, "frame").is_err());
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(matches!(
            a.open(b"segment 1 frame 12", &flipped, "frame"),
            Err(CryptoError::Tampered(_))
        ));
        // Two seals of the same text differ: the nonce is fresh each time.
        assert_ne!(
            sealed,
            a.seal(b"segment 1 frame 12", b"secret payload").unwrap()
        );
    }

    #[test]
    fn reload_switches_the_active_key_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.keys");
        std::fs::write(&path, format!("old:{K1}\n")).unwrap();
        let ring = Keyring::load(&EncryptionConfig {
            keys_env: None,
            keys_file: Some(path.clone()),
        })
        .unwrap()
        .unwrap();
        assert_eq!(ring.keys().active().id(), "old");
        std::fs::write(&path, format!("new:{K2}\nold:{K1}\n")).unwrap();
        assert_eq!(ring.reload().unwrap(), "new");
        std::fs::write(&path, "garbage").unwrap();
        assert!(ring.reload().is_err());
        assert_eq!(ring.keys().active().id(), "new");
        assert!(ring.keys().get("old").is_some());
    }

    #[test]
    fn generated_entries_parse() {
        let entry = generate_entry("2026-11").unwrap();
        let keys = KeySet::parse(&entry).unwrap();
        assert_eq!(keys.active().id(), "2026-11");
        assert!(generate_entry("no spaces").is_err());
    }
}
