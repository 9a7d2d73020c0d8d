//! OAuth 2.0 / OIDC bearer tokens: JWTs signed by an identity provider, verified against its
//! JWKS (fetched, cached, and fetched again when a token names a key id the cache does not
//! know, at most every `jwks_min_refetch`). Issuer, audience, expiry and not-before are checked;
//! the algorithms are pinned to an asymmetric list (`none` and HMAC cannot be configured). A
//! scope claim maps to Vigil scopes and an optional service claim to the service binding.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::Value;

use super::{AuthError, Principal, Scope};

/// Algorithms that may be configured: asymmetric only.
const ASYMMETRIC: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Where the identity provider publishes its signing keys. `https://`, or `http://` to a
    /// loopback address.
    pub jwks_url: String,
    /// Required `iss`.
    pub issuer: String,
    /// Required in `aud`.
    pub audience: String,
    /// Accepted signing algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim holding the token's scopes: a space-separated string or an array.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Token scope → Vigil scope, e.g. `{ "telemetry.write" = "ingest" }`. Token scopes
    /// named `ingest`, `query` or `admin` need no entry. Others are ignored.
    #[serde(default)]
    pub scope_map: BTreeMap<String, String>,
    /// Claim holding the service(s) the caller is bound to (string or array). Tokens without
    /// it are not bound to services.
    #[serde(default)]
    pub service_claim: Option<String>,
    /// Claim that names the caller in logs, metrics and the audit trail.
    #[serde(default = "default_id_claim")]
    pub id_claim: String,
    /// Cached keys are fetched again after this long.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Tokens naming an unknown key id make Vigil fetch the JWKS again (the provider rotated
    /// its keys), at most this often: a flood of made-up key ids cannot make Vigil hammer
    /// the provider.
    #[serde(default = "default_min_refetch", with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_scope_claim() -> String {
    "scope".into()
}
fn default_id_claim() -> String {
    "sub".into()
}
fn default_refresh() -> Duration {
    Duration::from_secs(600)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

impl JwtConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match url::Url::parse(&self.jwks_url) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
            Ok(_) => problems.push(format!(
                "auth.jwt.jwks_url {:?} must be https:// (http:// only to a loopback address)",
                self.jwks_url
            )),
            Err(e) => problems.push(format!("auth.jwt.jwks_url {:?}: {e}", self.jwks_url)),
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            problems.push("auth.jwt: issuer and audience are required".to_owned());
        }
        if self.algorithms.is_empty() {
            problems.push("auth.jwt.algorithms is empty".to_owned());
        }
        for a in &self.algorithms {
            if algorithm(a).is_none() {
                problems.push(format!(
                    "auth.jwt.algorithms: {a:?} is not accepted; use asymmetric algorithms ({})",
                    ASYMMETRIC.map(|(n, _)| n).join(", ")
                ));
            }
        }
        for (from, to) in &self.scope_map {
            if Scope::parse(to).is_none() {
                problems.push(format!(
                    "auth.jwt.scope_map: {from:?} maps to {to:?}, not one of ingest, query, admin"
                ));
            }
        }
        problems
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    ASYMMETRIC.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// The provider's keys, parsed once per fetch.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    fetched: Option<Instant>,
}

/// Verifies JWTs; shared by every listener through [`super::Auth`].
pub struct JwtVerifier {
    config: JwtConfig,
    validation: Validation,
    /// Read on every token; written after a fetch.
    keys: RwLock<Keys>,
    /// Held while fetching, so concurrent requests for an unknown key make one fetch; holds
    /// the time of the last attempt.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    client: reqwest::Client,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .filter_map(|a| algorithm(a))
            .collect();
        let Some(first) = algorithms.first() else {
            anyhow::bail!("auth.jwt.algorithms lists no accepted algorithm");
        };
        let mut validation = Validation::new(*first);
        validation.algorithms = algorithms;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            config: config.clone(),
            validation,
            keys: RwLock::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(None),
            client,
        })
    }

    /// The caller a token stands for.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let key = self.key(&kid).await.ok_or(AuthError::Invalid)?;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &self.validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "bearer token refused");
                AuthError::Invalid
            })?
            .claims;
        Ok(Arc::new(self.principal(&claims)))
    }

    /// The decoding key for `kid`, fetching the JWKS when the cache is stale or lacks it.
    async fn key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        if let Some(key) = self.cached(kid, false) {
            return Some(key);
        }
        let mut last_attempt = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid, false) {
            return Some(key);
        }
        let may_fetch = last_attempt.is_none_or(|t| t.elapsed() >= self.config.jwks_min_refetch);
        if may_fetch {
            *last_attempt = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => {
                    let by_kid: HashMap<String, Arc<DecodingKey>> = set
                        .keys
                        .iter()
                        .filter_map(|jwk| {
                            let kid = jwk.common.key_id.clone()?;
                            let key = DecodingKey::from_jwk(jwk).ok()?;
                            Some((kid, Arc::new(key)))
                        })
                        .collect();
                    tracing::info!(keys = by_kid.len(), "fetched the identity provider's JWKS");
                    *self.keys.write() = Keys {
                        by_kid,
                        fetched: Some(Instant::now()),
                    };
                }
                // Keys already cached stay usable while the provider is unreachable.
                Err(e) => {
                    tracing::warn!(error = %e, url = %self.config.jwks_url, "cannot fetch JWKS");
                }
            }
        }
        self.cached(kid, true)
    }

    /// A cached key; unless `stale_ok`, only while the cache is younger than `jwks_refresh`.
    fn cached(&self, kid: &str, stale_ok: bool) -> Option<Arc<DecodingKey>> {
        let keys = self.keys.read();
        let fresh = keys
            .fetched
            .is_some_and(|t| t.elapsed() < self.config.jwks_refresh);
        (fresh || stale_ok)
            .then(|| keys.by_kid.get(kid).cloned())
            .flatten()
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        let response = self.client.get(&self.config.jwks_url).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "JWKS answered {}",
            response.status()
        );
        Ok(response.json::<JwkSet>().await?)
    }

    fn principal(&self, claims: &Value) -> Principal {
        let id = claims
            .get(&self.config.id_claim)
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let scopes: BTreeSet<Scope> = strings(claims.get(&self.config.scope_claim))
            .iter()
            .filter_map(|s| {
                let mapped = self
                    .config
                    .scope_map
                    .get(s)
                    .map_or(s.as_str(), String::as_str);
                Scope::parse(mapped)
            })
            .collect();
        // A token without the claim is not bound (like a key without `services`); one with
        // the claim is bound to what it lists, even if that is nothing.
        let services = self
            .config
            .service_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .map(|v| strings(Some(v)).into());
        Principal::new(format!("jwt:{id}"), scopes, services)
    }
}

/// A claim as strings: space-separated (OAuth `scope`), or an array of strings.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
