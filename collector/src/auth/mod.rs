//! Who is calling, and what they may do: API keys with scopes (`ingest`, `query`, `admin`),
//! optionally bound to services. Every receiver and the API ask [`Auth::authorize`] before
//! they read a request body; the answer is a [`Principal`] that travels with the request.
//!
//! With no key file configured, auth is off and every request acts as the anonymous principal
//! (all scopes, every service). Configuration refuses that unless every listener is on loopback.

mod binding;
pub mod cert;
mod http;
pub mod jwt;
pub mod keys;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

pub use self::binding::{Binding, BindingOutcome};
use self::cert::{CertError, CertIdentities, ClientCertConfig};
pub use self::http::require;
use self::jwt::{JwtConfig, JwtVerifier};
use self::keys::KeySet;
use crate::metrics::Metrics;
use crate::tls::TlsConnectInfo;

/// What a key may do. Least privilege: no scope implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Send telemetry over OTLP.
    Ingest,
    /// Run SQL and read alerts through the API and console.
    Query,
    /// Reload keys, read the audit trail, read `/metrics` (unless public).
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "query" => Some(Scope::Query),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }
}

/// The caller of one request.
#[derive(Debug)]
pub struct Principal {
    /// The key's id (never the key), or `anonymous` when auth is off.
    pub id: String,
    scopes: BTreeSet<Scope>,
    /// `Some`: may only send as, and only see rows of, these services.
    services: Option<Arc<[String]>>,
}

static ANONYMOUS: LazyLock<Arc<Principal>> = LazyLock::new(|| {
    Arc::new(Principal {
        id: "anonymous".to_owned(),
        scopes: [Scope::Ingest, Scope::Query, Scope::Admin].into(),
        services: None,
    })
});

impl Principal {
    pub fn new(id: String, scopes: BTreeSet<Scope>, services: Option<Arc<[String]>>) -> Self {
        Self {
            id,
            scopes,
            services,
        }
    }

    /// The caller when auth is off: every scope, every service.
    pub fn anonymous() -> Arc<Principal> {
        Arc::clone(&ANONYMOUS)
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The services this caller is limited to; `None` for all.
    pub fn services(&self) -> Option<&[String]> {
        self.services.as_deref()
    }

    /// Whether this caller may see `service`'s data.
    pub fn sees(&self, service: &str) -> bool {
        self.services()
            .is_none_or(|s| s.iter().any(|x| x == service))
    }

    /// What this caller's queries may see: its services' rows; the audit trail if admin.
    pub fn visibility(&self) -> crate::query::Visibility {
        crate::query::Visibility::new(self.services.clone(), self.allows(Scope::Admin))
    }
}

/// What happens to records a service-bound key sends under another service's name.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MismatchAction {
    /// Refuse those records (OTLP partial success says how many and why).
    #[default]
    Reject,
    /// Store them under the key's service (keys bound to exactly one service); the claimed
    /// name stays in `resource['service.name']` as evidence.
    Relabel,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The API key file (see [`keys`]). Setting it turns authentication on for every
    /// listener. Re-read on SIGHUP and `POST /api/v1/admin/reload`.
    pub keys_file: Option<PathBuf>,
    /// Records a service-bound key sends for another service: `reject` or `relabel`.
    pub service_mismatch: MismatchAction,
    /// Serve `/metrics` without a key (for a scraper on a trusted network). Off: it needs
    /// the `admin` scope.
    pub public_metrics: bool,
    /// OAuth 2.0 / OIDC bearer tokens (JWTs) verified against an identity provider's JWKS,
    /// accepted besides the keys. Setting it turns authentication on.
    pub jwt: Option<JwtConfig>,
    /// Client certificates on mutual-TLS listeners as identities bound to the service they
    /// name. Setting it turns authentication on.
    pub client_certs: Option<ClientCertConfig>,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.keys_file.is_some() || self.jwt.is_some() || self.client_certs.is_some()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = self
            .jwt
            .as_ref()
            .map(JwtConfig::validate)
            .unwrap_or_default();
        if let Some(certs) = &self.client_certs {
            problems.extend(certs.validate());
        }
        if let Some(path) = &self.keys_file {
            match KeySet::load(path) {
                Ok(keys) => problems.extend(self.check_keys(&keys)),
                Err(e) => problems.push(format!("auth.keys_file: {e}")),
            }
        }
        problems
    }

    fn check_keys(&self, keys: &KeySet) -> Vec<String> {
        let mut problems = Vec::new();
        if keys.is_empty() && self.jwt.is_none() && self.client_certs.is_none() {
            problems.push("auth.keys_file lists no keys: nothing could connect".to_owned());
        }
        if self.service_mismatch == MismatchAction::Relabel {
            for p in keys.principals() {
                if p.allows(Scope::Ingest) && p.services().is_some_and(|s| s.len() != 1) {
                    problems.push(format!(
                        "auth.service_mismatch = \"relabel\" needs ingest keys bound to one \
                         service; key {:?} lists several",
                        p.id
                    ));
                }
            }
        }
        problems
    }
}

/// Why a request was refused before it was read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid or revoked key")]
    Invalid,
    #[error("key {id:?} does not have the {scope} scope", scope = scope.as_str())]
    Forbidden { id: String, scope: Scope },
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// A key bound to services, presented with a client certificate of another service.
    #[error("key {id:?} is not bound to the service of client certificate {certificate:?}")]
    NotBound { id: String, certificate: String },
}

impl AuthError {
    /// The `reason` label of `vigil_auth_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid => "invalid",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::Certificate(_) => "certificate",
            AuthError::NotBound { .. } => "not_bound",
        }
    }

    /// A known caller asking for more than it may (403), rather than an unknown one (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            AuthError::Forbidden { .. } | AuthError::NotBound { .. }
        )
    }
}

/// Checks credentials; cheap to clone and shared by every listener.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    /// Swapped whole on reload: a request sees the old set or the new one, never a mix.
    keys: RwLock<Arc<KeySet>>,
    jwt: Option<JwtVerifier>,
    certs: Option<CertIdentities>,
    metrics: Metrics,
}

/// What a caller presents: the `Authorization` header and, on a listener with mutual TLS,
/// the client certificate its handshake verified.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub authorization: Option<&'a [u8]>,
    pub certificate: Option<&'a CertificateDer<'static>>,
}

impl<'a> Credentials<'a> {
    /// Credentials of an HTTP or gRPC request: its header, and the certificate the TLS
    /// listener put in its extensions (tonic inserts the connection info as is; axum wraps
    /// it in `ConnectInfo`).
    pub fn of(headers: &'a axum::http::HeaderMap, extensions: &'a axum::http::Extensions) -> Self {
        let connection = extensions.get::<TlsConnectInfo>().or_else(|| {
            extensions
                .get::<axum::extract::ConnectInfo<TlsConnectInfo>>()
                .map(|c| &c.0)
        });
        Self::new(headers, connection)
    }

    /// Credentials from a request's headers and its TLS connection, if it came over one.
    pub fn new(headers: &'a axum::http::HeaderMap, connection: Option<&'a TlsConnectInfo>) -> Self {
        Self {
            authorization: headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            certificate: connection.and_then(|c| c.client_certificate.as_deref()),
        }
    }
}

impl Auth {
    /// Loads the key file, if one is configured.
    pub fn new(config: &AuthConfig, metrics: Metrics) -> anyhow::Result<Self> {
        let keys = match &config.keys_file {
            Some(path) => KeySet::load(path).map_err(anyhow::Error::msg)?,
            None => KeySet::default(),
        };
        let jwt = config.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let certs = config
            .client_certs
            .as_ref()
            .map(CertIdentities::new)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let auth = Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                keys: RwLock::new(Arc::new(keys)),
                jwt,
                certs,
                metrics,
            }),
        };
        auth.publish_key_count();
        Ok(auth)
    }

    pub fn enabled(&self) -> bool {
        self.inner.config.enabled()
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The caller behind a request's credentials, if it may act with `scope`: an API key, a
    /// JWT when `auth.jwt` is configured, or a client certificate when `auth.client_certs`
    /// is. A key or token presented together with a certificate may act only for the
    /// services both are bound to.
    pub async fn authorize(
        &self,
        credentials: Credentials<'_>,
        scope: Scope,
    ) -> Result<Arc<Principal>, AuthError> {
        let result = self.check(credentials, scope).await;
        if let Err(e) = &result {
            self.inner
                .metrics
                .auth_refusals
                .with_label_values(&[e.reason(), scope.as_str()])
                .inc();
        }
        result
    }

    async fn check(
        &self,
        credentials: Credentials<'_>,
        scope: Scope,
    ) -> Result<Arc<Principal>, AuthError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let certified = match (&self.inner.certs, credentials.certificate) {
            (Some(identities), Some(cert)) => Some(identities.principal(cert)?),
            _ => None,
        };
        let token = credentials.authorization.and_then(bearer_token);
        let principal = match (token, certified) {
            (None, None) => return Err(AuthError::Missing),
            (None, Some(certified)) => Arc::new(certified),
            (Some(token), certified) => {
                let presented = self.token_principal(token).await?;
                match certified {
                    None => presented,
                    Some(certified) => Arc::new(both(&presented, &certified)?),
                }
            }
        };
        if !principal.allows(scope) {
            return Err(AuthError::Forbidden {
                id: principal.id.clone(),
                scope,
            });
        }
        Ok(principal)
    }

    async fn token_principal(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        match &self.inner.jwt {
            // A JWT is three base64url parts; Vigil's keys have no dots.
            Some(jwt) if token.split('.').count() == 3 => jwt.verify(token).await,
            _ => self.inner.keys.read().find(token).ok_or(AuthError::Invalid),
        }
    }

    /// Re-reads the key file. On any problem the keys in use stay as they were. Returns how
    /// many keys are valid now.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.inner.config.keys_file else {
            // Token keys come from the JWKS, which is fetched as it changes; certificates are
            // checked against the client CA, which the TLS files bring.
            return match self.enabled() {
                true => Ok(0),
                false => Err("authentication is off: no auth.keys_file to reload".to_owned()),
            };
        };
        let keys = KeySet::load(path)?;
        let problems = self.inner.config.check_keys(&keys);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let count = keys.len();
        *self.inner.keys.write() = Arc::new(keys);
        self.publish_key_count();
        tracing::info!(keys = count, file = %path.display(), "API keys reloaded");
        Ok(count)
    }

    fn publish_key_count(&self) {
        let count = self.inner.keys.read().len();
        self.inner
            .metrics
            .auth_keys
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// How a principal's records are checked against its services at ingest; `None` when
    /// it may send for any service.
    pub fn binding(&self, principal: &Principal) -> Option<Binding> {
        principal.services.as_ref().map(|services| Binding {
            key: principal.id.clone(),
            services: Arc::clone(services),
            action: self.inner.config.service_mismatch,
        })
    }
}

/// A key or token presented over a connection with a client certificate: the key's id and
/// scopes, limited to the services both allow.
fn both(presented: &Principal, certified: &Principal) -> Result<Principal, AuthError> {
    let services = cert::narrow(presented.services.as_ref(), certified.services.as_ref());
    if services.as_deref().is_some_and(<[String]>::is_empty) {
        return Err(AuthError::NotBound {
            id: presented.id.clone(),
            certificate: certified.id.clone(),
        });
    }
    Ok(Principal::new(
        presented.id.clone(),
        presented.scopes.clone(),
        services,
    ))
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials made of a header value alone.
    fn header(authorization: Option<&[u8]>) -> Credentials<'_> {
        Credentials {
            authorization,
            certificate: None,
        }
    }

    fn auth_with(keys: &str, dir: &std::path::Path) -> Auth {
        let path = dir.join("keys.toml");
        std::fs::write(&path, keys).unwrap();
        let config = AuthConfig {
            keys_file: Some(path),
            ..AuthConfig::default()
        };
        Auth::new(&config, Metrics::new().unwrap()).unwrap()
    }

    fn listing(id: &str, hash: &str, scopes: &str) -> String {
        format!("[[keys]]\nid = {id:?}\nhash = {hash:?}\nscopes = {scopes}\n")
    }

    #[tokio::test]
    async fn keys_scopes_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest_key, ingest_hash) = keys::generate().unwrap();
        let (query_key, query_hash) = keys::generate().unwrap();
        let auth = auth_with(&listing("ci", &ingest_hash, "[\"ingest\"]"), dir.path());
        let bearer = |k: &str| format!("Bearer {k}").into_bytes();

        let ci = auth
            .authorize(header(Some(&bearer(&ingest_key))), Scope::Ingest)
            .await
            .unwrap();
        assert_eq!(ci.id, "ci");
        assert_eq!(
            auth.authorize(header(Some(&bearer(&ingest_key))), Scope::Query)
                .await
                .unwrap_err(),
            AuthError::Forbidden {
                id: "ci".into(),
                scope: Scope::Query
            }
        );
        assert_eq!(
            auth.authorize(header(None), Scope::Ingest)
                .await
                .unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.authorize(header(Some(b"Basic abc")), Scope::Ingest)
                .await
                .unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.authorize(header(Some(&bearer(&query_key))), Scope::Query)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        assert!(
            auth.authorize(
                header(Some(format!("bearer  {ingest_key} ").as_bytes())),
                Scope::Ingest
            )
            .await
            .is_ok()
        );

        // Rotation: the new key works and the revoked one is refused right after the reload.
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, listing("soc", &query_hash, "[\"query\"]")).unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(
            auth.authorize(header(Some(&bearer(&query_key))), Scope::Query)
                .await
                .is_ok()
        );
        assert_eq!(
            auth.authorize(header(Some(&bearer(&ingest_key))), Scope::Ingest)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        // A broken file keeps the keys in use.
        std::fs::write(&path, "[[keys]]\nid = 1\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(
            auth.authorize(header(Some(&bearer(&query_key))), Scope::Query)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn without_a_key_file_everyone_is_anonymous() {
        let auth = Auth::new(&AuthConfig::default(), Metrics::new().unwrap()).unwrap();
        let p = auth.authorize(header(None), Scope::Admin).await.unwrap();
        assert_eq!(p.id, "anonymous");
        assert!(p.services().is_none());
        assert!(auth.reload().is_err());
    }

    #[test]
    fn relabel_needs_single_service_ingest_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let (_, hash) = keys::generate().unwrap();
        std::fs::write(
            &path,
            listing("ci", &hash, "[\"ingest\"]") + "services = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let config = AuthConfig {
            keys_file: Some(path),
            service_mismatch: MismatchAction::Relabel,
            ..AuthConfig::default()
        };
        let problems = config.validate();
        assert!(
            problems.iter().any(|p| p.contains("bound to one service")),
            "{problems:?}"
        );
    }
}
