//! The built-in detectors. Patterns run with ASCII classes (`(?-u)`): `\d`, `\w`, `\b` mean
//! what they mean in log lines and keep the scanning automaton small; negated classes opt back
//! into Unicode (`(?u:[^…])`) so a match never splits a UTF-8 character.
//!
//! When a pattern has a group named `value`, only that group is replaced ("Bearer <value>",
//! "password=<value>"); otherwise the whole match is.

use super::config::{ActionKind, Category};
use super::validate::Validator;

/// A detector as defined, before per-config settings apply.
#[derive(Debug, Clone)]
pub struct DetectorDef {
    pub name: String,
    pub pattern: String,
    pub validator: Option<Validator>,
    pub action: ActionKind,
    pub keep_last: usize,
    pub category: Category,
}

struct Builtin {
    name: &'static str,
    pattern: &'static str,
    validator: Option<Validator>,
    action: ActionKind,
    category: Category,
}

use ActionKind::{Hash, Mask, Partial};
use Category::{Pii, Secret};

/// Order matters where two patterns match at the same position: the earlier one wins, so
/// specific credential formats come before generic PII shapes.
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        pattern: r"(?-u)-----BEGIN[A-Z ]{0,30} PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s\\:,.]|-[A-Za-z])*(?:-----END[A-Z ]{0,30} PRIVATE KEY(?: BLOCK)?-----)?",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "jwt",
        pattern: r"(?-u)\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
        validator: Some(Validator::Jwt),
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "aws_access_key_id",
        pattern: r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z2-7]{16}\b",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "aws_secret_access_key",
        pattern: r#"(?-u)(?i:aws[A-Za-z0-9_.\-]{0,20}secret[A-Za-z0-9_.\-]{0,20}|secret_?access_?key)["']?[ \t]{0,3}[:=][ \t]{0,3}["']?(?P<value>[A-Za-z0-9/+]{40})(?:(?u:[^A-Za-z0-9/+=])|$)"#,
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "gcp_api_key",
        pattern: r"(?-u)\bAIza[0-9A-Za-z_\-]{35}",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "gcp_oauth_token",
        pattern: r"(?-u)\bya29\.[0-9A-Za-z_\-]{20,}",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "azure_storage_key",
        pattern: r"(?-u)(?i:AccountKey)=(?P<value>[A-Za-z0-9+/]{86}==)",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "azure_client_secret",
        pattern: r"(?-u)\b[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34}",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "github_token",
        pattern: r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "slack_token",
        pattern: r"(?-u)\bxox[abposre]-[A-Za-z0-9\-]{10,250}|https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/_\-]{20,}",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "stripe_key",
        pattern: r"(?-u)\b(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9]{24,})\b",
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "url_credentials",
        pattern: r#"(?-u)\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://(?u:[^\s:/?#@"'<>\[\]])+:(?P<value>(?u:[^\s/?#@"'<>\[])(?u:[^\s/?#@"'<>])*)@"#,
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "url_secret_param",
        pattern: r#"(?-u)[?&;](?i:password|passwd|pwd|pass|token|access_token|refresh_token|id_token|auth_token|api_?key|apikey|secret|client_secret|sig|signature|session_?id|sid|code|key|x-amz-signature|x-amz-credential|x-amz-security-token)=(?P<value>(?u:[^&\s#"'<>\[])(?u:[^&\s#"'<>])*)"#,
        validator: None,
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "auth_credential",
        pattern: r"(?-u)(?i:\b(?:bearer|basic|digest|negotiate))[ \t]+(?P<value>[A-Za-z0-9._~+/\-]{8,}=*)",
        validator: Some(Validator::Credential),
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "password_assignment",
        pattern: r#"(?-u)\b(?:[A-Za-z0-9]{1,20}[_.\-]){0,3}(?i:password|passwd|pwd|passphrase)["']?[ \t]*[:=][ \t]*["']?(?P<value>(?u:[^\s"',;&}\]\[<>])(?u:[^\s"',;&}<>])*)"#,
        validator: Some(Validator::Password),
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "secret_assignment",
        pattern: r#"(?-u)\b(?:[A-Za-z0-9]{1,20}[_.\-]){0,3}(?i:secret|token|api_?key|apikey|access_?key|secret_?key|private_?key|client_?secret|credentials?)["']?[ \t]*[:=][ \t]*["']?(?P<value>(?u:[^\s"',;&}\]\[<>])(?u:[^\s"',;&}<>])*)"#,
        validator: Some(Validator::Entropy),
        action: Mask,
        category: Secret,
    },
    Builtin {
        name: "email",
        pattern: r"(?-u)\b[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b",
        validator: None,
        action: Hash,
        category: Pii,
    },
    Builtin {
        name: "iban",
        pattern: r"(?-u)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        validator: Some(Validator::Iban),
        action: Partial,
        category: Pii,
    },
    Builtin {
        name: "credit_card",
        pattern: r"(?-u)\b[2-6][0-9](?:[ \-]?[0-9]){11,17}\b",
        validator: Some(Validator::CreditCard),
        action: Partial,
        category: Pii,
    },
    Builtin {
        name: "us_ssn",
        pattern: r#"(?-u)\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b|\b[0-9]{3} [0-9]{2} [0-9]{4}\b|(?i:\bssn|\bsocial[ _\-]security[ _\-](?:number|no))[\s:=#"']{1,4}(?P<value>[0-9]{9})\b"#,
        validator: Some(Validator::UsSsn),
        action: Mask,
        category: Pii,
    },
    Builtin {
        name: "phone",
        pattern: r"(?-u)\+[1-9](?:[ .\-]?\(?[0-9]\)?){6,14}\b|(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}\b|\b0[1-9][0-9]{1,3}[ \-][0-9]{3,4}[ \-]?[0-9]{3,4}\b",
        validator: Some(Validator::Phone),
        action: Mask,
        category: Pii,
    },
    Builtin {
        name: "ipv6",
        // Eight groups, or fewer around a `::` (optionally ending in an embedded IPv4): the
        // shapes an address can take, so times (`12:30:45`) and log timestamps are not
        // candidates at all.
        // `\b` / `\B` keep `std::io` and `Error::bad` from being candidates.
        pattern: r"(?-u)(?i:\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:\b[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}|\B)::(?:(?:[0-9a-f]{1,4}:){0,5}[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?|\b(?:[0-9a-f]{1,4}:){6}[0-9]{1,3}(?:\.[0-9]{1,3}){3})",
        validator: Some(Validator::Ipv6),
        action: Hash,
        category: Pii,
    },
    Builtin {
        name: "ipv4",
        pattern: r"(?-u)\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b",
        validator: Some(Validator::Ipv4),
        action: Hash,
        category: Pii,
    },
];

/// Characters kept by `partial` when a detector does not say otherwise.
pub const DEFAULT_KEEP_LAST: usize = 4;

pub fn builtins() -> Vec<DetectorDef> {
    BUILTINS
        .iter()
        .map(|b| DetectorDef {
            name: b.name.to_owned(),
            pattern: b.pattern.to_owned(),
            validator: b.validator,
            action: b.action,
            keep_last: DEFAULT_KEEP_LAST,
            category: b.category,
        })
        .collect()
}

pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// `(name, pattern)` of every built-in detector, in scan order (for benchmarks comparing
/// scanning strategies).
pub fn builtin_patterns() -> impl Iterator<Item = (&'static str, &'static str)> {
    BUILTINS.iter().map(|b| (b.name, b.pattern))
}

/// Keys whose values are replaced whatever they look like. Matched by word, so `db.password`,
/// `X-Api-Key` and `userPassword` are caught and `input_tokens` is not.
pub const DEFAULT_DENY_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
    "session_token",
    "private_key",
    "ssn",
    "card",
    "card_number",
    "cvv",
    "cvc",
    "pin",
];
