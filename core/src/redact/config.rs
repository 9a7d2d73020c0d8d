//! `[redaction]` in vigil.toml: the serde shape. Compiling it (and reporting every problem at
//! once) is [`super::Redactor::new`]'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::detectors::DEFAULT_DENY_KEYS;

/// What happens to a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// `[REDACTED:EMAIL]`
    Mask,
    /// `email:3f9a1c…`: keyed HMAC-SHA256 pseudonym, stable for one key, so analysts can group
    /// and join on it.
    Hash,
    /// Keep the last `keep_last` characters: `[REDACTED:CREDIT_CARD:****1111]`.
    Partial,
    /// Remove the attribute that holds it (a body or span name is masked instead).
    Drop,
}

/// Whether a finding is personal data or a credential. A credential in telemetry is itself an
/// incident ("secret exposed in logs of service X").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Pii,
    Secret,
    /// Removed by the attribute allow-list.
    Policy,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pii => "pii",
            Self::Secret => "secret",
            Self::Policy => "policy",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Turning redaction off stores PII and secrets as sent. Vigil logs a warning at start.
    pub enabled: bool,
    /// Environment variable holding the HMAC key for `hash` pseudonyms.
    pub hash_key_env: Option<String>,
    /// File holding the HMAC key. With neither set, a random key is generated once and kept
    /// in `<data_dir>/redaction.key`.
    pub hash_key_file: Option<PathBuf>,
    /// Settings for built-in detectors, by name.
    pub detectors: BTreeMap<String, DetectorSettings>,
    /// Detectors added by the operator.
    pub custom: Vec<CustomDetector>,
    pub keys: KeysConfig,
    /// Per-service overrides, by `service.name`.
    pub services: BTreeMap<String, ServiceOverride>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hash_key_env: None,
            hash_key_file: None,
            detectors: BTreeMap::new(),
            custom: Vec::new(),
            keys: KeysConfig::default(),
            services: BTreeMap::new(),
        }
    }
}

/// Overrides for one detector. Unset fields keep the detector's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSettings {
    pub enabled: Option<bool>,
    pub action: Option<ActionKind>,
    pub keep_last: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    pub name: String,
    /// Rust `regex` syntax. A group named `value` limits the replacement to that group.
    pub pattern: String,
    /// One of `luhn`, `credit_card`, `us_ssn`, `phone`, `ipv4`, `ipv6`, `iban`, `jwt`,
    /// `credential`, `entropy`.
    pub validator: Option<String>,
    #[serde(default = "default_custom_action")]
    pub action: ActionKind,
    pub keep_last: Option<usize>,
    #[serde(default = "default_custom_category")]
    pub category: Category,
}

fn default_custom_action() -> ActionKind {
    ActionKind::Mask
}
fn default_custom_category() -> Category {
    Category::Pii
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Attribute keys (and JSON object keys in bodies) whose values are always replaced.
    /// Matched word by word, case-insensitively: `api_key` catches `X-Api-Key`.
    pub deny: Vec<String>,
    /// What replaces a denied key's value (`mask`, `hash` or `drop`).
    pub action: ActionKind,
    /// When non-empty, every attribute whose key is not listed is dropped.
    pub allow: Vec<String>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            deny: DEFAULT_DENY_KEYS.iter().map(|k| (*k).to_owned()).collect(),
            action: ActionKind::Mask,
            allow: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceOverride {
    /// Detector settings for this service, over the global ones.
    pub detectors: BTreeMap<String, DetectorSettings>,
    /// Extra keys denied for this service, on top of `keys.deny`.
    pub deny_keys: Vec<String>,
    /// Replaces `keys.allow` for this service when set.
    pub allow_keys: Option<Vec<String>>,
}
