//! The API key file: who may do what, by key hash. Keys are random 256-bit tokens, so a plain
//! SHA-256 of the key is as good as a slow password hash here and costs nothing per request.
//!
//! ```toml
//! [[keys]]
//! id = "checkout-ingest"          # in logs, metrics and the audit trail; never the key itself
//! hash = "sha256:5e88…"           # `vigil keys generate` prints the key and this line
//! scopes = ["ingest"]             # ingest | query | admin
//! services = ["checkout"]         # optional: send as, and see rows of, these services only
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Principal, Scope};

/// Prefix of every key Vigil generates: makes leaked keys easy to find with secret scanners.
pub const KEY_PREFIX: &str = "vgl_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    hash: String,
    scopes: Vec<String>,
    #[serde(default)]
    services: Option<Vec<String>>,
}

/// Every valid key, by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct KeySet {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl KeySet {
    /// Reads and checks a key file; every problem is reported, with the entry it is in.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: KeyFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut problems = Vec::new();
        let mut by_hash = HashMap::new();
        let mut ids = BTreeSet::new();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let at = format!("keys[{i}] ({:?})", entry.id);
            match entry.into_principal() {
                Ok((hash, principal)) => {
                    if !ids.insert(principal.id.clone()) {
                        problems.push(format!("{at}: the id is used twice"));
                    }
                    if by_hash.insert(hash, Arc::new(principal)).is_some() {
                        problems.push(format!("{at}: the same key hash is listed twice"));
                    }
                }
                Err(e) => problems.extend(e.into_iter().map(|p| format!("{at}: {p}"))),
            }
        }
        if problems.is_empty() {
            Ok(Self { by_hash })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The principal a presented key belongs to.
    pub fn find(&self, key: &str) -> Option<Arc<Principal>> {
        self.by_hash.get(&hash_key(key)).cloned()
    }

    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.by_hash.values().map(AsRef::as_ref)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

impl KeyEntry {
    fn into_principal(self) -> Result<([u8; 32], Principal), Vec<String>> {
        let mut problems = Vec::new();
        if self.id.trim().is_empty() || self.id.len() > 128 {
            problems.push("id must be 1 to 128 characters".to_owned());
        }
        let hash = parse_hash(&self.hash).map_err(|e| problems.push(e)).ok();
        let mut scopes = BTreeSet::new();
        for s in &self.scopes {
            match Scope::parse(s) {
                Some(scope) => {
                    scopes.insert(scope);
                }
                None => problems.push(format!(
                    "unknown scope {s:?}; scopes are ingest, query and admin"
                )),
            }
        }
        if self.scopes.is_empty() {
            problems.push("scopes must list at least one of ingest, query, admin".to_owned());
        }
        if let Some(services) = &self.services {
            if services.is_empty() {
                problems.push(
                    "services is empty; leave it out for a key not limited to services".to_owned(),
                );
            }
            if services.iter().any(|s| s.trim().is_empty()) {
                problems.push("services has an empty name".to_owned());
            }
        }
        match hash {
            Some(hash) if problems.is_empty() => Ok((
                hash,
                Principal::new(self.id, scopes, self.services.map(Into::into)),
            )),
            _ => Err(problems),
        }
    }
}

/// `sha256:<64 hex digits>`.
fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex_part = text
        .strip_prefix("sha256:")
        .ok_or_else(|| "hash must be \"sha256:<64 hex digits>\"".to_owned())?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut hash)
        .map_err(|_| "hash must be \"sha256:<64 hex digits>\"".to_owned())?;
    Ok(hash)
}

fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key and the `hash` value that lists it in the key file.
pub fn generate() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = format!("sha256:{}", hex::encode(hash_key(&key)));
    Ok((key, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, key: &str, scopes: &str, services: &str) -> String {
        format!(
            "[[keys]]\nid = {id:?}\nhash = \"sha256:{}\"\nscopes = {scopes}\n{services}\n",
            hex::encode(hash_key(key))
        )
    }

    #[test]
    fn keys_are_found_by_hash_with_their_scopes_and_services() {
        let text = entry("ci", "vgl_a", "[\"ingest\"]", "services = [\"checkout\"]")
            + &entry("soc", "vgl_b", "[\"query\", \"admin\"]", "");
        let keys = KeySet::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        let ci = keys.find("vgl_a").unwrap();
        assert_eq!(ci.id, "ci");
        assert!(ci.allows(Scope::Ingest) && !ci.allows(Scope::Query));
        assert_eq!(ci.services(), Some(&["checkout".to_owned()][..]));
        let soc = keys.find("vgl_b").unwrap();
        assert!(soc.allows(Scope::Query) && soc.allows(Scope::Admin));
        assert!(!soc.allows(Scope::Ingest));
        assert_eq!(soc.services(), None);
        assert!(keys.find("vgl_c").is_none());
        assert!(keys.find("").is_none());
    }

    #[test]
    fn every_problem_is_reported_with_its_entry() {
        let text = "[[keys]]\nid = \"a\"\nhash = \"md5:00\"\nscopes = [\"root\"]\n\
                    [[keys]]\nid = \"b\"\nhash = \"sha256:zz\"\nscopes = []\nservices = []\n";
        let err = KeySet::parse(text).unwrap_err();
        for expected in [
            "keys[0] (\"a\"): hash must be",
            "unknown scope \"root\"",
            "keys[1] (\"b\"): hash must be",
            "scopes must list at least one",
            "services is empty",
        ] {
            assert!(err.contains(expected), "{expected} missing from: {err}");
        }
        let twice =
            entry("a", "vgl_x", "[\"query\"]", "") + &entry("a", "vgl_x", "[\"query\"]", "");
        let err = KeySet::parse(&twice).unwrap_err();
        assert!(
            err.contains("id is used twice") && err.contains("listed twice"),
            "{err}"
        );
        assert!(KeySet::parse("[[keys]]\nid = \"a\"\nkey = \"vgl_plaintext\"\n").is_err());
    }

    #[test]
    fn generated_keys_are_random_prefixed_and_match_their_hash() {
        let (key, hash) = generate().unwrap();
        let (other, _) = generate().unwrap();
        assert_ne!(key, other);
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43);
        let keys = KeySet::parse(&format!(
            "[[keys]]\nid = \"x\"\nhash = \"{hash}\"\nscopes = [\"ingest\"]\n"
        ))
        .unwrap();
        assert!(keys.find(&key).is_some());
        assert!(keys.find(&other).is_none());
    }
}
