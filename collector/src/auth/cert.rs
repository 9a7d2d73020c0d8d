//! Client certificates as identities: on a listener with mutual TLS, the verified certificate
//! a service presents names the service, and binds it the way a service-bound key does. A
//! SPIFFE workload (`spiffe://example.org/ns/prod/sa/checkout`) or a certificate issued per
//! service (`DNS:checkout.prod.svc`) can then send only as itself, with no key to distribute.

use std::collections::BTreeSet;
use std::sync::Arc;

use regex::Regex;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Principal, Scope};

/// `[auth.client_certs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// Which certificate name identifies the service: a `uri` or `dns` subject alternative
    /// name, or the subject's common name (`cn`).
    pub name: CertName,
    /// A regex over that name whose `service` group is the service; without it the whole
    /// name is. A certificate none of whose names match is refused.
    #[serde(default)]
    pub pattern: Option<String>,
    /// What a certificate alone may do (no bearer token). Default: `ingest`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["ingest".to_owned()]
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertName {
    Uri,
    Dns,
    Cn,
}

impl ClientCertConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(pattern) = &self.pattern {
            match Regex::new(pattern) {
                Ok(re) if re.capture_names().flatten().any(|n| n == "service") => {}
                Ok(_) => problems
                    .push("auth.client_certs.pattern needs a `(?P<service>...)` group".to_owned()),
                Err(e) => problems.push(format!("auth.client_certs.pattern: {e}")),
            }
        }
        if self.scopes.is_empty() {
            problems.push("auth.client_certs.scopes is empty".to_owned());
        }
        for s in &self.scopes {
            if Scope::parse(s).is_none() {
                problems.push(format!(
                    "auth.client_certs.scopes: unknown scope {s:?} (ingest, query, admin)"
                ));
            }
        }
        problems
    }
}

/// Turns verified client certificates into principals.
#[derive(Debug)]
pub struct CertIdentities {
    name: CertName,
    pattern: Option<Regex>,
    scopes: BTreeSet<Scope>,
}

/// Why a certificate gives no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client certificate: {0}")]
pub struct CertError(String);

impl CertIdentities {
    pub fn new(config: &ClientCertConfig) -> Result<Self, String> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let pattern = config
            .pattern
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            name: config.name,
            pattern,
            scopes: config
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .collect(),
        })
    }

    /// The principal of a certificate the TLS layer has verified against the client CA:
    /// `cert:<name>`, with the configured scopes, bound to the service the name gives.
    pub fn principal(&self, cert: &CertificateDer<'_>) -> Result<Principal, CertError> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| CertError(format!("cannot be parsed: {e}")))?;
        let names = self.names(&parsed)?;
        let (name, service) = names
            .iter()
            .find_map(|n| self.service(n).map(|s| (n, s)))
            .ok_or_else(|| {
                CertError(format!(
                    "no {} name names a service (it has {names:?})",
                    self.label()
                ))
            })?;
        Ok(Principal::new(
            format!("cert:{name}"),
            self.scopes.clone(),
            Some(Arc::from([service])),
        ))
    }

    fn label(&self) -> &'static str {
        match self.name {
            CertName::Uri => "URI",
            CertName::Dns => "DNS",
            CertName::Cn => "common",
        }
    }

    fn names(&self, cert: &X509Certificate<'_>) -> Result<Vec<String>, CertError> {
        if self.name == CertName::Cn {
            return Ok(cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect());
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertError(format!("bad subject alternative names: {e}")))?;
        Ok(san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match (self.name, n) {
                        (CertName::Uri, GeneralName::URI(u)) => Some((*u).to_owned()),
                        (CertName::Dns, GeneralName::DNSName(d)) => Some((*d).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn service(&self, name: &str) -> Option<String> {
        let service = match &self.pattern {
            Some(re) => re.captures(name)?.name("service")?.as_str(),
            None => name,
        };
        (!service.is_empty()).then(|| service.to_owned())
    }
}

/// The services a caller may act for when it presents both a key (or token) and a client
/// certificate: those both allow. `None` when both are unbound.
pub fn narrow(key: Option<&Arc<[String]>>, cert: Option<&Arc<[String]>>) -> Option<Arc<[String]>> {
    match (key, cert) {
        (Some(k), Some(c)) => Some(k.iter().filter(|s| c.contains(s)).cloned().collect()),
        (Some(only), None) | (None, Some(only)) => Some(Arc::clone(only)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[rcgen::SanType], cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans.to_vec();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn identities(name: CertName, pattern: Option<&str>) -> CertIdentities {
        CertIdentities::new(&ClientCertConfig {
            name,
            pattern: pattern.map(str::to_owned),
            scopes: default_scopes(),
        })
        .unwrap()
    }

    #[test]
    fn spiffe_uri_names_the_service() {
        let spiffe = rcgen::SanType::URI(
            "spiffe://example.org/ns/prod/sa/checkout"
                .try_into()
                .unwrap(),
        );
        let c = cert(&[spiffe], "ignored");
        let ids = identities(
            CertName::Uri,
            Some("^spiffe://example\\.org/ns/[^/]+/sa/(?P<service>[^/]+)$"),
        );
        let p = ids.principal(&c).unwrap();
        assert_eq!(p.id, "cert:spiffe://example.org/ns/prod/sa/checkout");
        assert_eq!(p.services(), Some(&["checkout".to_owned()][..]));
        assert!(p.allows(Scope::Ingest) && !p.allows(Scope::Query));
    }

    #[test]
    fn dns_and_common_names_without_a_pattern() {
        let c = cert(
            &[rcgen::SanType::DnsName("payments".try_into().unwrap())],
            "payments-cn",
        );
        let dns = identities(CertName::Dns, None).principal(&c).unwrap();
        assert_eq!(dns.services(), Some(&["payments".to_owned()][..]));
        let cn = identities(CertName::Cn, None).principal(&c).unwrap();
        assert_eq!(cn.services(), Some(&["payments-cn".to_owned()][..]));
    }

    #[test]
    fn a_certificate_naming_no_service_is_refused() {
        let c = cert(
            &[rcgen::SanType::DnsName("payments".try_into().unwrap())],
            "x",
        );
        let err = identities(CertName::Uri, None).principal(&c).unwrap_err();
        assert!(err.to_string().contains("no URI name"), "{err}");
        let err = identities(CertName::Dns, Some("^svc-(?P<service>.+)$"))
            .principal(&c)
            .unwrap_err();
        assert!(err.to_string().contains("\"payments\""), "{err}");
    }

    #[test]
    fn config_problems_are_reported() {
        let bad = ClientCertConfig {
            name: CertName::Uri,
            pattern: Some("^(.+)$".into()),
            scopes: vec!["ingest".into(), "root".into()],
        };
        let problems = bad.validate().join("\n");
        assert!(problems.contains("(?P<service>"), "{problems}");
        assert!(problems.contains("\"root\""), "{problems}");
    }

    #[test]
    fn key_and_certificate_bindings_narrow_to_what_both_allow() {
        let s = |v: &[&str]| -> Arc<[String]> { v.iter().map(|s| (*s).to_owned()).collect() };
        assert_eq!(
            narrow(Some(&s(&["a", "b"])), Some(&s(&["b"]))).as_deref(),
            Some(&["b".to_owned()][..])
        );
        assert_eq!(
            narrow(Some(&s(&["a"])), Some(&s(&["b"]))).as_deref(),
            Some(&[][..])
        );
        assert_eq!(
            narrow(None, Some(&s(&["b"]))).as_deref(),
            Some(&["b".to_owned()][..])
        );
        assert_eq!(narrow(None, None), None);
    }
}
