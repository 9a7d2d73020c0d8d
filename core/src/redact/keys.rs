//! Attribute keys: the deny-list (values replaced whatever they look like) and the optional
//! allow-list (everything else dropped).
//!
//! Keys are compared word by word: `http.request.header.x-api-key`, `userPassword` and
//! `DB_PASSWORD` split into words (`x api key`, `user password`, `db password`), and a deny
//! entry matches when its words appear in a row. So `token` catches `auth.token` but not
//! `gen_ai.usage.input_tokens`, and `api_key` catches `X-Api-Key` but not `cache.key`.

use std::collections::HashSet;

/// Splits a key into lower-case words at punctuation and lower→upper case changes.
pub(super) fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyDecision {
    Keep,
    Deny,
    NotAllowed,
}

#[derive(Debug, Clone)]
pub(super) struct KeyRules {
    deny: Vec<Vec<String>>,
    allow: Option<HashSet<String>>,
}

impl KeyRules {
    /// An empty `allow` means no allow-list.
    pub fn new<'a>(deny: impl IntoIterator<Item = &'a String>, allow: &[String]) -> Self {
        let mut deny: Vec<Vec<String>> = deny
            .into_iter()
            .map(|k| words(k))
            .filter(|w| !w.is_empty())
            .collect();
        deny.sort();
        deny.dedup();
        Self {
            deny,
            allow: (!allow.is_empty()).then(|| allow.iter().cloned().collect()),
        }
    }

    pub fn decide(&self, key: &str) -> KeyDecision {
        if let Some(allow) = &self.allow
            && !allow.contains(key)
            && key != "service.name"
        {
            return KeyDecision::NotAllowed;
        }
        self.decide_deny_only(key)
    }

    /// The deny-list alone, for keys that are not attribute keys (JSON objects in bodies).
    pub fn decide_deny_only(&self, key: &str) -> KeyDecision {
        let key_words = words(key);
        let denied = self.deny.iter().any(|entry| {
            key_words
                .windows(entry.len())
                .any(|window| window == entry.as_slice())
        });
        if denied {
            KeyDecision::Deny
        } else {
            KeyDecision::Keep
        }
    }

    /// The denied words, for the hint pattern that finds them as JSON object keys.
    pub fn deny_words(&self) -> impl Iterator<Item = &[String]> {
        self.deny.iter().map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_words() {
        assert_eq!(
            words("http.request.header.x-api-key"),
            ["http", "request", "header", "x", "api", "key"]
        );
        assert_eq!(words("userPassword"), ["user", "password"]);
        assert_eq!(words("DB_PASSWORD"), ["db", "password"]);
        assert_eq!(
            words("gen_ai.usage.input_tokens"),
            ["gen", "ai", "usage", "input", "tokens"]
        );
    }

    #[test]
    fn deny_matches_whole_words_in_sequence() {
        let deny: Vec<String> = ["password", "api_key", "token", "set-cookie"]
            .map(String::from)
            .to_vec();
        let rules = KeyRules::new(&deny, &[]);
        for key in [
            "password",
            "db.password",
            "userPassword",
            "X-Api-Key",
            "auth.token",
            "Set-Cookie",
        ] {
            assert_eq!(rules.decide(key), KeyDecision::Deny, "{key}");
        }
        for key in [
            "gen_ai.usage.input_tokens",
            "cache.key",
            "api.version",
            "cookie_count",
            "passwordless",
        ] {
            assert_eq!(rules.decide(key), KeyDecision::Keep, "{key}");
        }
    }

    #[test]
    fn allow_list_drops_the_rest_but_keeps_the_service_name() {
        let allow = ["http.method".to_owned()];
        let rules = KeyRules::new(&[], &allow);
        assert_eq!(rules.decide("http.method"), KeyDecision::Keep);
        assert_eq!(rules.decide("service.name"), KeyDecision::Keep);
        assert_eq!(rules.decide("user.email"), KeyDecision::NotAllowed);
    }
}
