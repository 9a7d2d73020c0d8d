//! The Sigma rules compiled into the binary from the repository's `config/rules/`.

use crate::sigma::RuleSource;

include!(concat!(env!("OUT_DIR"), "/shipped_rules.rs"));

/// The shipped rules as sources named `shipped:<file>`.
pub fn sources() -> Vec<RuleSource> {
    RULES
        .iter()
        .map(|(name, text)| RuleSource {
            origin: format!("shipped:{name}"),
            text: (*text).to_owned(),
        })
        .collect()
}
