//! The `[alerts]` section: webhook sinks, what each receives, how it groups and retries, and
//! where sinks may connect at all.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_detector::Severity;

use super::egress::EgressPolicy;

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub sinks: Vec<SinkConfig>,
    /// Destinations sinks may reach: host names (`siem.example.com`, `*.example.com`), IP
    /// addresses and CIDRs (`10.0.0.0/8`). A sink URL outside the list is refused at start;
    /// a name that resolves to an address outside it (when the name itself is not listed) is
    /// refused at connect time. Empty: no sink may be configured.
    pub egress_allow: Vec<String>,
    /// Base URL of Vigil's API as receivers should reach it, for links back to an alert
    /// (Alertmanager `generatorURL`, OCSF `finding_info.src_url`). Default: the API listener.
    pub external_url: Option<String>,
}

/// Payload shape a receiver expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Alertmanager webhook payload, version "4".
    Alertmanager,
    /// A JSON array of OCSF Detection Findings (class_uid 2004).
    Ocsf,
    /// Splunk HTTP Event Collector events, `Authorization: Splunk <token>`.
    SplunkHec,
    /// Vigil's own notification document.
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Alertmanager => "alertmanager",
            Format::Ocsf => "ocsf",
            Format::SplunkHec => "splunk_hec",
            Format::Json => "json",
        }
    }
}

/// One `[[alerts.sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in metrics, logs and the `dead_letters` table; `[a-z0-9_-]`.
    pub name: String,
    pub format: Format,
    /// `https://` (or `http://` to a loopback or allow-listed private address).
    pub url: String,

    /// Standard Webhooks signing secret (`whsec_<base64>` or at least 16 raw bytes), from an
    /// environment variable or a file. Without one, requests are not signed.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Splunk HEC token (required for `splunk_hec`), from an environment variable or a file.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) trusted for this sink, beside the public web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,

    /// Only alerts at least this severe.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Only these rule ids (`*` wildcards); empty: every rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only these services (`*` wildcards); empty: every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// Also notify when alerts resolve.
    #[serde(default = "yes")]
    pub send_resolved: bool,

    /// Alerts with equal values of these fields share notifications: any of `rule_id`,
    /// `service`, `severity`, `fingerprint` (one notification stream per alert). Empty: one
    /// group for everything.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    /// Minimum time between notifications of a group that changed.
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    /// A group still firing and unchanged is notified again after this long.
    #[serde(default = "default_repeat_interval", with = "humantime_serde")]
    pub repeat_interval: Duration,

    /// Time one request may take, connect to last byte.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight at once (notifications of one group are always sent in order).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// First retry delay; doubles per attempt (with jitter) up to `max_backoff`.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Retry budget: a notification not delivered this long after it was queued becomes a
    /// dead letter.
    #[serde(default = "default_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
    /// Notifications the outbox holds before new ones go straight to the dead letters.
    #[serde(default = "default_max_outbox")]
    pub max_outbox: usize,

    /// Splunk HEC `index` (the token's default index when unset) and `sourcetype`.
    #[serde(default)]
    pub hec_index: Option<String>,
    #[serde(default = "default_sourcetype")]
    pub hec_sourcetype: String,
}

fn default_min_severity() -> Severity {
    Severity::Info
}
fn yes() -> bool {
    true
}
fn default_group_by() -> Vec<String> {
    vec!["rule_id".into(), "service".into()]
}
fn default_group_wait() -> Duration {
    Duration::from_secs(10)
}
fn default_group_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    4
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_outbox() -> usize {
    10_000
}
fn default_sourcetype() -> String {
    "vigil:alert".into()
}

/// Fields a sink may group by.
pub const GROUP_FIELDS: [&str; 4] = ["rule_id", "service", "severity", "fingerprint"];

impl AlertsConfig {
    /// Every problem with the section (secrets are only checked for presence of a source;
    /// they are read at start).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let egress = match EgressPolicy::parse(&self.egress_allow) {
            Ok(e) => Some(e),
            Err(p) => {
                problems.extend(p.into_iter().map(|p| format!("alerts.egress_allow: {p}")));
                None
            }
        };
        if let Some(url) = &self.external_url
            && reqwest::Url::parse(url).is_err()
        {
            problems.push(format!("alerts.external_url = {url:?} is not a URL"));
        }
        let mut names = std::collections::HashSet::new();
        for sink in &self.sinks {
            let at = format!("alerts.sinks `{}`", sink.name);
            if sink.name.is_empty()
                || !sink
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                problems.push(format!(
                    "{at}: name must be non-empty and use only a-z, 0-9, `_` and `-`"
                ));
            }
            if !names.insert(sink.name.as_str()) {
                problems.push(format!("{at}: two sinks share this name"));
            }
            match reqwest::Url::parse(&sink.url) {
                Err(e) => problems.push(format!("{at}: url is not a URL: {e}")),
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    problems.push(format!("{at}: url must be http:// or https://"));
                }
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    problems.push(format!(
                        "{at}: url must not carry credentials; use token_env/token_file or \
                         secret_env/secret_file"
                    ));
                }
                Ok(url) => {
                    if let Some(egress) = &egress
                        && let Err(e) = egress.check_url(&url)
                    {
                        problems.push(format!("{at}: {e}"));
                    }
                }
            }
            if sink.secret_env.is_some() && sink.secret_file.is_some() {
                problems.push(format!("{at}: set secret_env or secret_file, not both"));
            }
            if sink.token_env.is_some() && sink.token_file.is_some() {
                problems.push(format!("{at}: set token_env or token_file, not both"));
            }
            let has_token = sink.token_env.is_some() || sink.token_file.is_some();
            match (sink.format, has_token) {
                (Format::SplunkHec, false) => problems.push(format!(
                    "{at}: splunk_hec needs the HEC token in token_env or token_file"
                )),
                (Format::Alertmanager | Format::Ocsf | Format::Json, true) => problems.push(
                    format!("{at}: token_env/token_file only apply to splunk_hec"),
                ),
                _ => {}
            }
            for field in &sink.group_by {
                if !GROUP_FIELDS.contains(&field.as_str()) {
                    problems.push(format!(
                        "{at}: group_by `{field}` is not one of {}",
                        GROUP_FIELDS.join(", ")
                    ));
                }
            }
            for (name, d) in [
                ("group_interval", sink.group_interval),
                ("repeat_interval", sink.repeat_interval),
                ("timeout", sink.timeout),
                ("initial_backoff", sink.initial_backoff),
                ("max_backoff", sink.max_backoff),
                ("retry_for", sink.retry_for),
            ] {
                if d.is_zero() {
                    problems.push(format!("{at}: {name} must be longer than 0s"));
                }
            }
            if sink.max_backoff < sink.initial_backoff {
                problems.push(format!("{at}: max_backoff is shorter than initial_backoff"));
            }
            if sink.concurrency == 0 || sink.max_outbox == 0 {
                problems.push(format!(
                    "{at}: concurrency and max_outbox must be greater than 0"
                ));
            }
            for pattern in sink.rules.iter().chain(&sink.services) {
                if pattern.is_empty() {
                    problems.push(format!("{at}: empty rule or service pattern"));
                }
            }
        }
        problems
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = rest.get(i + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "anything", true),
            ("sigma.*", "sigma.auth", true),
            ("sigma.*", "baseline.x", false),
            ("*.bruteforce", "auth.bruteforce", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    fn sink(extra: &str) -> AlertsConfig {
        toml::from_str(&format!(
            "egress_allow = [\"siem.example.com\", \"*.corp.example\"]\n[[sinks]]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn validation_reports_every_problem() {
        let c = sink(
            r#"name = "Bad Name"
            format = "splunk_hec"
            url = "https://user:pw@other.example.com/x"
            group_by = ["host"]
            retry_for = "0s"
            secret_env = "A"
            secret_file = "/b"
            "#,
        );
        let problems = c.validate().join("\n");
        for needle in [
            "name must be non-empty",
            "must not carry credentials",
            "splunk_hec needs the HEC token",
            "group_by `host`",
            "retry_for must be longer than 0s",
            "secret_env or secret_file, not both",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle:?} in\n{problems}"
            );
        }
    }

    #[test]
    fn destinations_outside_the_allow_list_are_refused() {
        let c = sink("name = \"a\"\nformat = \"json\"\nurl = \"https://evil.example.net/hook\"");
        let problems = c.validate().join("\n");
        assert!(problems.contains("evil.example.net"), "{problems}");
        assert!(problems.contains("egress_allow"), "{problems}");
        let ok = sink("name = \"a\"\nformat = \"json\"\nurl = \"https://siem.example.com/hook\"");
        assert_eq!(ok.validate(), Vec::<String>::new());
    }
}
