//! The redaction stage: the only place a [`RedactedBatch`] is made.
//!
//! Every string Vigil keeps from a record passes through here before anything is persisted or
//! seen by the detector: log bodies (text and JSON), span names and status messages, every
//! attribute map (record, resource, scope) and span events and links. Each string is scanned
//! once for all detectors ([`scan`]); candidates are validated (Luhn, mod-97, SSN rules, …) and
//! replaced per the detector's action; attribute keys on the deny-list have their values
//! replaced whatever they look like. What was found is returned as [`Findings`].

mod columns;
mod config;
mod detectors;
mod findings;
mod gate;
mod json;
mod keys;
mod scan;
mod validate;

#[cfg(any(test, feature = "testkit"))]
pub mod corpus;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::batch::{Batch, RedactedBatch};

pub use config::{
    ActionKind, Category, CustomDetector, DetectorSettings, KeysConfig, RedactionConfig,
    ServiceOverride,
};
pub use detectors::{DEFAULT_DENY_KEYS, builtin_names, builtin_patterns};
pub use findings::{Finding, Findings};
pub use validate::Validator;

use detectors::DetectorDef;
use findings::{Collector, Entity};
use keys::KeyRules;
use scan::Scanner;

/// Entity index of a value replaced because its key is on the deny-list.
const SENSITIVE_KEY: usize = usize::MAX - 1;
/// Entity index of an attribute dropped by the allow-list.
const NOT_ALLOWED: usize = usize::MAX;

/// Hex characters of a `hash` pseudonym (64 bits of the HMAC: collisions are negligible for
/// grouping and joining, and the value cannot be brute-forced without the key).
const PSEUDONYM_HEX: usize = 16;

/// The HMAC key behind `hash` pseudonyms. Never printed.
#[derive(Clone)]
pub struct HashKey(Arc<[u8]>);

impl HashKey {
    /// Shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "the redaction hash key has {} bytes; at least {} are required",
                bytes.len(),
                Self::MIN_LEN
            ));
        }
        Ok(Self(bytes.into()))
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// Everything wrong with a `[redaction]` section, one problem per entry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct RedactionConfigError(pub Vec<String>);

/// Rewriting a batch failed; the batch must not be stored.
#[derive(Debug, thiserror::Error)]
#[error("redaction failed: {0}")]
pub struct RedactionFailed(#[from] arrow::error::ArrowError);

/// Applies the configured redaction policy to decoded batches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Redactor {
    engine: Option<Arc<Engine>>,
}

impl Redactor {
    /// Compiles `config`. Reports every problem at once.
    pub fn new(config: &RedactionConfig, key: HashKey) -> Result<Self, RedactionConfigError> {
        if !config.enabled {
            return Ok(Self::disabled());
        }
        Ok(Self {
            engine: Some(Arc::new(Engine::new(config, key)?)),
        })
    }

    /// Checks `config` without a key, for `vigil check-config`.
    pub fn check(config: &RedactionConfig) -> Result<(), RedactionConfigError> {
        let key =
            HashKey::new(&[0; HashKey::MIN_LEN]).map_err(|e| RedactionConfigError(vec![e]))?;
        Self::new(config, key).map(|_| ())
    }

    /// Passes batches through untouched: only for `redaction.enabled = false`.
    pub fn disabled() -> Self {
        Self { engine: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.engine.is_some()
    }

    /// Redacts one batch. Pure: no I/O, safe to call from a blocking worker.
    pub fn apply(&self, batch: Batch) -> Result<RedactedBatch, RedactionFailed> {
        match &self.engine {
            None => Ok(RedactedBatch::from_redacted(batch, Findings::default())),
            Some(engine) => {
                let (batch, findings) = engine.redact_batch(batch)?;
                Ok(RedactedBatch::from_redacted(batch, findings))
            }
        }
    }

    /// Redacts one string as a log body of `service` would be. For tests and benchmarks.
    pub fn redact_str<'a>(&self, service: &str, text: &'a str) -> Cow<'a, str> {
        self.redact_str_findings(service, text).0
    }

    /// [`Self::redact_str`], also returning what was found.
    pub fn redact_str_findings<'a>(
        &self,
        service: &str,
        text: &'a str,
    ) -> (Cow<'a, str>, Findings) {
        let Some(engine) = &self.engine else {
            return (Cow::Borrowed(text), Findings::default());
        };
        let mut collector = Collector::default();
        let mut site = Site {
            collector: &mut collector,
            service,
            field: "body",
            row: 0,
        };
        let out = match engine.redact_body(text, engine.policy(service), &mut site) {
            Some(r) => Cow::Owned(r),
            None => Cow::Borrowed(text),
        };
        let findings = collector.finish(|e| engine.entities.get(engine.entity_index(e)));
        (out, findings)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Mask,
    Hash,
    Partial(usize),
    Drop,
}

/// The settings for one service (or the default).
struct Policy {
    /// Per detector; `None` when it is off for this service.
    actions: Vec<Option<Action>>,
    keys: KeyRules,
    key_action: Action,
}

/// What redaction does to one string.
enum Outcome {
    Replaced(String),
    /// A detector with action `drop` matched (the entity index).
    Drop(usize),
}

/// Where the findings of the value being redacted are tallied.
struct Site<'c, 'a> {
    collector: &'c mut Collector<'a>,
    service: &'a str,
    field: &'a str,
    row: usize,
}

impl Site<'_, '_> {
    fn record(&mut self, entity: usize) {
        self.collector
            .record(self.service, entity, self.field, self.row);
    }
}

struct Engine {
    scanner: Scanner,
    /// Detectors in scan order, then [`SENSITIVE_KEY`] and [`NOT_ALLOWED`].
    entities: Vec<Entity>,
    markers: Vec<String>,
    default_policy: Policy,
    services: HashMap<String, Policy>,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("detectors", &self.entities.len().saturating_sub(2))
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

fn resolve_action(kind: ActionKind, keep_last: usize) -> Action {
    match kind {
        ActionKind::Mask => Action::Mask,
        ActionKind::Hash => Action::Hash,
        ActionKind::Partial => Action::Partial(keep_last),
        ActionKind::Drop => Action::Drop,
    }
}

/// A detector's effective setting in one policy.
#[derive(Debug, Clone, Copy)]
struct Setting {
    enabled: bool,
    action: ActionKind,
    keep_last: usize,
}

impl Setting {
    /// This setting with `over` applied.
    fn merge(self, over: Option<&DetectorSettings>) -> Self {
        match over {
            None => self,
            Some(s) => Self {
                enabled: s.enabled.unwrap_or(self.enabled),
                action: s.action.unwrap_or(self.action),
                keep_last: s.keep_last.unwrap_or(self.keep_last),
            },
        }
    }

    fn action(self) -> Option<Action> {
        self.enabled
            .then(|| resolve_action(self.action, self.keep_last))
    }
}

impl Engine {
    fn new(config: &RedactionConfig, key: HashKey) -> Result<Self, RedactionConfigError> {
        let mut problems = Vec::new();
        let mut defs = detectors::builtins();
        let known: BTreeSet<String> = defs.iter().map(|d| d.name.clone()).collect();
        // Operator detectors scan first: they are the most specific.
        let mut at = 0;
        for (i, custom) in config.custom.iter().enumerate() {
            match custom_def(custom, &known, config.custom.get(..i).unwrap_or(&[])) {
                Ok(def) => {
                    defs.insert(at, def);
                    at += 1;
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        let names: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        let overrides = std::iter::once(("redaction.detectors".to_owned(), &config.detectors))
            .chain(
                config
                    .services
                    .iter()
                    .map(|(s, o)| (format!("redaction.services.{s:?}.detectors"), &o.detectors)),
            );
        for (section, settings) in overrides {
            for (name, s) in settings {
                if !names.contains(name.as_str()) {
                    problems.push(format!(
                        "{section}: there is no detector named {name:?}; built-in ones are {}",
                        builtin_names().collect::<Vec<_>>().join(", ")
                    ));
                }
                if s.keep_last == Some(0) {
                    problems.push(format!("{section}.{name}: keep_last must be at least 1"));
                }
            }
        }
        if config.keys.action == ActionKind::Partial {
            problems.push("redaction.keys.action must be mask, hash or drop".into());
        }

        // Effective settings: global, then per service.
        let global: Vec<Setting> = defs
            .iter()
            .map(|d| {
                let base = Setting {
                    enabled: true,
                    action: d.action,
                    keep_last: d.keep_last,
                };
                base.merge(config.detectors.get(&d.name))
            })
            .collect();
        let per_service: Vec<(&String, Vec<Setting>)> = config
            .services
            .iter()
            .map(|(service, o)| {
                let settings = defs
                    .iter()
                    .zip(&global)
                    .map(|(d, g)| g.merge(o.detectors.get(&d.name)))
                    .collect();
                (service, settings)
            })
            .collect();
        // Scan only for detectors some policy uses.
        let used: Vec<usize> = (0..defs.len())
            .filter(|&i| {
                global.get(i).is_some_and(|g| g.enabled)
                    || per_service
                        .iter()
                        .any(|(_, s)| s.get(i).is_some_and(|g| g.enabled))
            })
            .collect();

        let key_action = resolve_action(config.keys.action, 0);
        let policy = |settings: &[Setting], keys: KeyRules| Policy {
            actions: used
                .iter()
                .map(|&i| settings.get(i).and_then(|s| s.action()))
                .collect(),
            keys,
            key_action,
        };
        let default_policy = policy(
            &global,
            KeyRules::new(&config.keys.deny, &config.keys.allow),
        );
        let services: HashMap<String, Policy> = per_service
            .iter()
            .filter_map(|(service, settings)| {
                let o = config.services.get(*service)?;
                let deny = config.keys.deny.iter().chain(&o.deny_keys);
                let allow = o.allow_keys.as_deref().unwrap_or(&config.keys.allow);
                Some((
                    (*service).clone(),
                    policy(settings, KeyRules::new(deny, allow)),
                ))
            })
            .collect();

        if !problems.is_empty() {
            return Err(RedactionConfigError(problems));
        }

        let used_defs: Vec<&DetectorDef> = used.iter().filter_map(|&i| defs.get(i)).collect();
        let patterns: Vec<(String, Option<Validator>)> = used_defs
            .iter()
            .map(|d| (d.pattern.clone(), d.validator))
            .collect();
        let all_keys =
            std::iter::once(&default_policy.keys).chain(services.values().map(|p| &p.keys));
        let hint = json_key_hint(all_keys);
        let scanner = Scanner::new(&patterns, hint.as_deref())
            .map_err(|e| RedactionConfigError(vec![e.to_string()]))?;

        let mut entities: Vec<Entity> = used_defs
            .iter()
            .map(|d| Entity {
                name: Arc::from(d.name.as_str()),
                category: d.category,
            })
            .collect();
        entities.push(Entity {
            name: Arc::from("sensitive_key"),
            category: Category::Secret,
        });
        entities.push(Entity {
            name: Arc::from("not_allowed"),
            category: Category::Policy,
        });
        let markers = entities
            .iter()
            .map(|e| format!("[REDACTED:{}]", e.name.to_ascii_uppercase()))
            .collect();
        let mac = Hmac::<Sha256>::new_from_slice(&key.0)
            .map_err(|e| RedactionConfigError(vec![format!("redaction hash key: {e}")]))?;
        Ok(Self {
            scanner,
            entities,
            markers,
            default_policy,
            services,
            mac,
        })
    }

    fn policy(&self, service: &str) -> &Policy {
        if self.services.is_empty() {
            return &self.default_policy;
        }
        self.services.get(service).unwrap_or(&self.default_policy)
    }

    fn entity_index(&self, entity: usize) -> usize {
        match entity {
            SENSITIVE_KEY => self.entities.len() - 2,
            NOT_ALLOWED => self.entities.len() - 1,
            e => e,
        }
    }

    fn entity_name(&self, entity: usize) -> &str {
        self.entities
            .get(self.entity_index(entity))
            .map_or("unknown", |e| &e.name)
    }

    fn marker(&self, entity: usize) -> &str {
        self.markers
            .get(self.entity_index(entity))
            .map_or("[REDACTED]", String::as_str)
    }

    /// Whether `value` holds something redaction wrote (a marker or a pseudonym), so a second
    /// pass leaves it alone even when the characters around it changed its meaning.
    fn is_redaction_output(&self, value: &str) -> bool {
        value.contains("[REDACTED")
            || value
                .match_indices(':')
                .any(|(colon, _)| self.starts_in_pseudonym(value, colon + 1))
    }

    /// Whether `at` is inside (or at the start of the hex of) a pseudonym written earlier, as in
    /// `email:3f9a…@example.com`, so a second pass does not take the hex for a new value.
    fn starts_in_pseudonym(&self, text: &str, at: usize) -> bool {
        let bytes = text.as_bytes();
        let is_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        let before = bytes.get(..at).unwrap_or(&[]);
        let back = before.iter().rev().take_while(|b| is_hex(b)).count();
        let hex_start = at - back;
        let run = bytes
            .get(hex_start..)
            .unwrap_or(&[])
            .iter()
            .take_while(|b| is_hex(b))
            .count();
        if run != PSEUDONYM_HEX {
            return false;
        }
        let Some(prefix) = text.get(..hex_start).and_then(|p| p.strip_suffix(':')) else {
            return false;
        };
        self.entities.iter().any(|e| {
            prefix.strip_suffix(&*e.name).is_some_and(|rest| {
                !rest
                    .bytes()
                    .next_back()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        })
    }

    /// Redacts detector findings in `text`; `None` when there are none.
    fn redact_text(&self, text: &str, policy: &Policy, site: &mut Site<'_, '_>) -> Option<Outcome> {
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut from = 0;
        let enabled = |d: usize| policy.actions.get(d).is_some_and(Option::is_some);
        while let Some(hit) = self.scanner.next(text, from, enabled) {
            let value = text.get(hit.value_start..hit.value_end).unwrap_or("");
            let Some(action) = policy.actions.get(hit.detector).copied().flatten() else {
                break;
            };
            if self.is_redaction_output(value) || self.starts_in_pseudonym(text, hit.start) {
                from = scan::next_char(text, hit.start);
                continue;
            }
            site.record(hit.detector);
            if action == Action::Drop {
                return Some(Outcome::Drop(hit.detector));
            }
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 32));
            buf.push_str(text.get(copied..hit.value_start).unwrap_or(""));
            buf.push_str(&self.replacement(hit.detector, action, value, site));
            copied = hit.value_end;
            from = hit
                .end
                .max(hit.value_end)
                .max(scan::next_char(text, hit.start));
        }
        out.map(|mut buf| {
            buf.push_str(text.get(copied..).unwrap_or(""));
            Outcome::Replaced(buf)
        })
    }

    /// [`Self::redact_text`] behind the cheap whole-string test most strings stop at.
    fn redact_if_candidate(
        &self,
        text: &str,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> Option<Outcome> {
        if !self.scanner.is_candidate(text) {
            return None;
        }
        self.redact_text(text, policy, site)
    }

    /// A text field that cannot be dropped (span name, status message, text body) and that
    /// already passed the gate: a `drop` finding masks the whole field.
    fn redact_field_candidate(
        &self,
        text: &str,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> Option<String> {
        self.redact_text(text, policy, site)
            .map(|o| self.field_value(o))
    }

    fn field_value(&self, outcome: Outcome) -> String {
        match outcome {
            Outcome::Replaced(r) => r,
            Outcome::Drop(entity) => self.marker(entity).to_owned(),
        }
    }

    /// The value of a denied key; `None` means drop the attribute.
    fn key_replacement(
        &self,
        policy: &Policy,
        value: &str,
        site: &mut Site<'_, '_>,
    ) -> Option<String> {
        match policy.key_action {
            Action::Drop => None,
            Action::Hash => Some(self.pseudonym(SENSITIVE_KEY, value, site)),
            Action::Mask | Action::Partial(_) => Some(self.marker(SENSITIVE_KEY).to_owned()),
        }
    }

    fn replacement(
        &self,
        entity: usize,
        action: Action,
        value: &str,
        site: &mut Site<'_, '_>,
    ) -> String {
        match action {
            Action::Mask | Action::Drop => self.marker(entity).to_owned(),
            Action::Hash => self.pseudonym(entity, value, site),
            Action::Partial(keep) => {
                let name = self.entity_name(entity);
                let compact: String = value.chars().filter(|c| c.is_alphanumeric()).collect();
                let total = compact.chars().count();
                // Never keep half or more of a value.
                if keep == 0 || keep * 2 > total {
                    return self.marker(entity).to_owned();
                }
                let tail: String = compact.chars().skip(total - keep).collect();
                format!("[REDACTED:{}:****{tail}]", name.to_ascii_uppercase())
            }
        }
    }

    /// `entity:<16 hex>`: HMAC-SHA256 over the entity name and the normalised value, so the
    /// same address or email gives the same pseudonym however it was written. Memoised per
    /// batch: one client address usually appears in many records (body and attributes).
    fn pseudonym(&self, entity: usize, value: &str, site: &mut Site<'_, '_>) -> String {
        if let Some(p) = site.collector.pseudonym(entity, value) {
            return p.to_owned();
        }
        let name = self.entity_name(entity);
        let normalised = normalise(name, value);
        let mut mac = self.mac.clone();
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(normalised.as_bytes());
        let digest = mac.finalize().into_bytes();
        // Hex digits into a buffer of their exact size (which cannot fail), then one string.
        let mut digits = [0u8; PSEUDONYM_HEX];
        let _ = hex::encode_to_slice(digest.get(..PSEUDONYM_HEX / 2).unwrap_or(&[]), &mut digits);
        let mut pseudonym = String::with_capacity(name.len() + 1 + PSEUDONYM_HEX);
        pseudonym.push_str(name);
        pseudonym.push(':');
        pseudonym.push_str(std::str::from_utf8(&digits).unwrap_or_default());
        site.collector.remember_pseudonym(entity, value, &pseudonym);
        pseudonym
    }
}

fn normalise<'a>(entity: &str, value: &'a str) -> Cow<'a, str> {
    match entity {
        "email" => Cow::Owned(value.to_lowercase()),
        "credit_card" | "phone" | "us_ssn" | "iban" => Cow::Owned(
            value
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        ),
        // The standard parser takes only the canonical dotted quad (four decimal octets, no
        // leading zeros), so an IPv4 address it reads is already in its one written form.
        "ipv4" => Cow::Borrowed(value),
        "ipv6" => value
            .parse::<IpAddr>()
            .map_or(Cow::Borrowed(value), |ip| Cow::Owned(ip.to_string())),
        _ => Cow::Borrowed(value),
    }
}

/// A hint pattern that fires on a JSON object key containing a denied word, so a JSON body
/// whose only sensitive part is `"password": "hunter2"` still gets the structural walk.
fn json_key_hint<'a>(rules: impl Iterator<Item = &'a KeyRules>) -> Option<String> {
    let mut alternatives = BTreeSet::new();
    for r in rules {
        for words in r.deny_words() {
            let escaped: Vec<String> = words.iter().map(|w| regex::escape(w)).collect();
            alternatives.insert(escaped.join(r"[^A-Za-z0-9]?"));
        }
    }
    if alternatives.is_empty() {
        return None;
    }
    let alternatives: Vec<String> = alternatives.into_iter().collect();
    Some(format!(
        r#"(?i)"[A-Za-z0-9_.\- ]{{0,64}}(?:{})"#,
        alternatives.join("|")
    ))
}

/// Validates an operator-defined detector.
fn custom_def(
    custom: &CustomDetector,
    builtins: &BTreeSet<String>,
    earlier: &[CustomDetector],
) -> Result<DetectorDef, Vec<String>> {
    let mut problems = Vec::new();
    let name = &custom.name;
    let section = format!("redaction.custom {name:?}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        problems.push(format!(
            "{section}: name must be lower-case letters, digits and _"
        ));
    }
    if builtins.contains(name) || earlier.iter().any(|e| &e.name == name) {
        problems.push(format!(
            "{section}: a detector with this name already exists"
        ));
    }
    if matches!(name.as_str(), "sensitive_key" | "not_allowed") {
        problems.push(format!("{section}: the name is reserved"));
    }
    match regex::RegexBuilder::new(&custom.pattern)
        .size_limit(scan::PATTERN_SIZE_LIMIT)
        .build()
    {
        Err(e) => problems.push(format!("{section}: bad pattern: {e}")),
        Ok(re) => {
            let empty = regex_automata::util::syntax::parse(&custom.pattern)
                .map(|hir| hir.properties().minimum_len() == Some(0))
                .unwrap_or(false);
            if empty || re.is_match("") {
                problems.push(format!("{section}: the pattern can match an empty string"));
            }
        }
    }
    let validator = match custom.validator.as_deref() {
        None => None,
        Some(v) => {
            let parsed = Validator::parse(v);
            if parsed.is_none() {
                problems.push(format!(
                    "{section}: unknown validator {v:?}; known ones are {}",
                    Validator::NAMES.join(", ")
                ));
            }
            parsed
        }
    };
    if custom.keep_last == Some(0) {
        problems.push(format!("{section}: keep_last must be at least 1"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(DetectorDef {
        name: name.clone(),
        pattern: custom.pattern.clone(),
        validator,
        action: custom.action,
        keep_last: custom.keep_last.unwrap_or(detectors::DEFAULT_KEEP_LAST),
        category: custom.category,
    })
}

#[cfg(test)]
mod tests;
