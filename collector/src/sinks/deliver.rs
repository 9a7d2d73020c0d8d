//! One delivery attempt: the HTTP request a sink sends and how its answer is read — which
//! failures are worth retrying, when, and which mean "stop".

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT,
};

use super::config::SinkConfig;
use super::egress::{EgressPolicy, is_denied};
use super::sign::SigningKey;

/// Redirects followed per request, and only to the same host and port.
const MAX_REDIRECTS: usize = 3;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Try again, not before `after` when the receiver said so (`Retry-After`).
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// The receiver refused this notification for good (4xx other than 408/429, or a
    /// redirect elsewhere); retrying would not help.
    Rejected {
        status: Option<u16>,
        error: String,
    },
    /// 410 Gone: the endpoint no longer exists; the sink stops.
    Gone,
    /// The destination resolved outside the egress allow-list.
    Denied {
        error: String,
    },
}

/// Sends notifications for one sink.
pub struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    key: Option<SigningKey>,
    /// `Splunk <token>`, marked sensitive so it never appears in debug output.
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("origin", &origin(&self.url))
            .field("signed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// `scheme://host:port` of a URL: what logs and tables show of a destination (paths and
/// queries of webhook URLs often carry secrets).
pub fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

impl Sender {
    pub fn new(
        config: &SinkConfig,
        egress: &Arc<EgressPolicy>,
        key: Option<SigningKey>,
        token: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.url)?;
        let (host, port) = (
            url.host_str().map(str::to_owned),
            url.port_or_known_default(),
        );
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if attempt.url().host_str().map(str::to_owned) != host
                || attempt.url().port_or_known_default() != port
            {
                attempt.error("redirect to another host refused")
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(redirect)
            .dns_resolver(egress.resolver())
            // A proxy would resolve and connect on our behalf, around the egress check.
            .no_proxy()
            .pool_max_idle_per_host(config.concurrency);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read ca_file {}: {e}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("ca_file {} is not PEM: {e}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let authorization = token
            .map(|t| {
                let mut v = HeaderValue::from_bytes(&[b"Splunk ".as_slice(), &t].concat())
                    .map_err(|_| {
                        anyhow::anyhow!("the HEC token has characters a header cannot carry")
                    })?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Self {
            client: builder.build()?,
            url,
            key,
            authorization,
        })
    }

    pub fn origin(&self) -> String {
        origin(&self.url)
    }

    /// Sends `body` once as message `id`.
    pub async fn send(&self, id: &str, body: &str, now_secs: i64) -> Attempt {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("vigil/", env!("CARGO_PKG_VERSION"))),
        );
        if let Ok(v) = HeaderValue::from_str(id) {
            headers.insert("webhook-id", v);
        }
        headers.insert("webhook-timestamp", HeaderValue::from(now_secs));
        if let Some(key) = &self.key
            && let Ok(v) = HeaderValue::from_str(&key.sign(id, now_secs, body.as_bytes()))
        {
            headers.insert("webhook-signature", v);
        }
        if let Some(auth) = &self.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body.to_owned())
            .send()
            .await;
        match response {
            Ok(r) => classify(r.status(), r.headers().get(RETRY_AFTER)),
            Err(e) => classify_error(&e),
        }
    }
}

fn classify(status: StatusCode, retry_after: Option<&HeaderValue>) -> Attempt {
    let code = Some(status.as_u16());
    if status.is_success() {
        return Attempt::Delivered;
    }
    if status == StatusCode::GONE {
        return Attempt::Gone;
    }
    let error = format!("receiver answered {status}");
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        return Attempt::Retry {
            status: code,
            error,
            after: retry_after.and_then(parse_retry_after),
        };
    }
    // Other 4xx, and 3xx the redirect policy did not follow.
    Attempt::Rejected {
        status: code,
        error,
    }
}

fn classify_error(e: &reqwest::Error) -> Attempt {
    if is_denied(e) {
        return Attempt::Denied {
            error: error_text(e),
        };
    }
    if e.is_redirect() {
        return Attempt::Rejected {
            status: None,
            error: error_text(e),
        };
    }
    Attempt::Retry {
        status: None,
        error: error_text(e),
        after: None,
    }
}

/// The error and its causes on one line, without the URL (which may carry a secret).
fn error_text(e: &reqwest::Error) -> String {
    let mut parts = vec![if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_redirect() {
        "redirect refused".to_owned()
    } else {
        "request failed".to_owned()
    }];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// `Retry-After`: delay seconds or an HTTP date.
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Delay before attempt `attempts + 1`: exponential from `initial`, capped at `max`, with
/// "equal jitter" (between half and all of it) so many Vigils do not retry in lockstep; never
/// sooner than the receiver's `Retry-After`.
pub fn backoff(
    initial: Duration,
    max: Duration,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = initial
        .checked_mul(1u32 << attempts.saturating_sub(1).min(20))
        .unwrap_or(max)
        .min(max);
    let mut random = [0u8; 8];
    // Without randomness, retry at the full delay: still bounded, only less spread.
    let r = getrandom::fill(&mut random).map_or(u64::MAX, |()| u64::from_le_bytes(random));
    let half = exp / 2;
    let jitter = half.mul_f64(r as f64 / u64::MAX as f64);
    let delay = half + jitter;
    retry_after.map_or(delay, |ra| delay.max(ra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let retry = |s: u16| {
            matches!(
                classify(StatusCode::from_u16(s).unwrap(), None),
                Attempt::Retry { .. }
            )
        };
        for s in [500, 502, 503, 504, 408, 429] {
            assert!(retry(s), "{s} is retried");
        }
        for s in [400, 401, 403, 404, 413, 422, 301, 302] {
            assert!(
                matches!(
                    classify(StatusCode::from_u16(s).unwrap(), None),
                    Attempt::Rejected { .. }
                ),
                "{s} is not retried"
            );
        }
        assert_eq!(classify(StatusCode::GONE, None), Attempt::Gone);
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Attempt::Delivered);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_retry_after(&h("7")), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&h(&httpdate::fmt_http_date(later))).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after(&h("soon")), None);
        match classify(StatusCode::SERVICE_UNAVAILABLE, Some(&h("30"))) {
            Attempt::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(30))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_grows_is_capped_jittered_and_honours_retry_after() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempts in 1..30 {
            let exp = (i * 2u32.pow((attempts - 1).min(20))).min(m);
            let d = backoff(i, m, attempts, None);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempts}: {d:?} vs {exp:?}"
            );
        }
        assert!(backoff(i, m, 1, Some(Duration::from_secs(90))) >= Duration::from_secs(90));
    }
}
