//! Where sinks may connect: an allow-list of host names and networks, checked on the URL at
//! start and again on every resolved address at connect time (so a listed-by-network name
//! cannot be re-pointed elsewhere by DNS).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Exact names, lower case.
    hosts: Vec<String>,
    /// `*.example.com` entries, stored as `.example.com`.
    suffixes: Vec<String>,
    nets: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EgressDenied(String);

impl EgressPolicy {
    pub fn parse(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut policy = EgressPolicy::default();
        let mut problems = Vec::new();
        for entry in entries {
            let e = entry.trim().to_ascii_lowercase();
            if let Ok(net) = e.parse::<IpNet>() {
                policy.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if let Some(suffix) = e.strip_prefix("*.")
                && is_hostname(suffix)
            {
                policy.suffixes.push(format!(".{suffix}"));
            } else if is_hostname(&e) {
                policy.hosts.push(e);
            } else {
                problems.push(format!(
                    "{entry:?} is not a host name, `*.domain`, IP address or CIDR"
                ));
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// Is `host` allowed by name (whatever it resolves to)?
    fn name_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Checks a sink URL at start: an IP literal must be in a listed network; a name must be
    /// listed or resolve (at connect time) into a listed network, so it is accepted here only
    /// when some network is listed.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), EgressDenied> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) if self.ip_allowed(IpAddr::V4(ip)) => Ok(()),
            Some(url::Host::Ipv6(ip)) if self.ip_allowed(IpAddr::V6(ip)) => Ok(()),
            Some(url::Host::Domain(name)) if self.name_allowed(name) || !self.nets.is_empty() => {
                Ok(())
            }
            Some(host) => Err(EgressDenied(format!(
                "destination {host} is not in alerts.egress_allow"
            ))),
            None => Err(EgressDenied("url has no host".into())),
        }
    }

    /// The resolver sinks connect through: the system resolver, then only addresses the
    /// policy allows for that name.
    pub fn resolver(self: &Arc<Self>) -> Arc<CheckedResolver> {
        Arc::new(CheckedResolver(self.clone()))
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub struct CheckedResolver(Arc<EgressPolicy>);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let by_name = policy.name_allowed(&host);
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| by_name || policy.ip_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(EgressDenied(format!(
                    "{host} resolves to no address allowed by alerts.egress_allow"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether `err` (from a request) was an egress refusal.
pub fn is_denied(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<EgressDenied>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> EgressPolicy {
        EgressPolicy::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn names_suffixes_and_networks() {
        let p = policy(&["siem.example.com", "*.corp.example", "10.0.0.0/8", "::1"]);
        assert!(p.check_url(&url("https://SIEM.example.com/x")).is_ok());
        assert!(p.check_url(&url("https://a.b.corp.example/x")).is_ok());
        assert!(p.check_url(&url("http://10.1.2.3:8080/x")).is_ok());
        assert!(p.check_url(&url("http://[::1]:9/x")).is_ok());
        assert!(p.check_url(&url("http://11.0.0.1/x")).is_err());
        assert!(p.check_url(&url("http://[::2]/x")).is_err());
        assert!(!p.name_allowed("corp.example"));
        assert!(p.ip_allowed("::ffff:10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn names_need_a_listing_or_a_network() {
        let names_only = policy(&["siem.example.com"]);
        assert!(
            names_only
                .check_url(&url("https://other.example.com"))
                .is_err()
        );
        let empty = policy(&[]);
        assert!(empty.check_url(&url("http://127.0.0.1:1/")).is_err());
    }

    #[test]
    fn bad_entries_are_reported() {
        let err = EgressPolicy::parse(&["not a host".into(), "10.0.0.0/33".into()]).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
    }

    #[tokio::test]
    async fn resolver_filters_addresses_outside_the_networks() {
        let p = Arc::new(policy(&["10.0.0.0/8"]));
        let resolver = p.resolver();
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolves outside 10/8"),
            Err(e) => e,
        };
        assert!(is_denied(err.as_ref()), "{err}");
        let p = Arc::new(policy(&["127.0.0.0/8", "::1"]));
        let addrs: Vec<_> = p
            .resolver()
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
