//! OAuth 2.0 / OIDC bearer tokens end to end: the test is the identity provider. It makes
//! ES256 key pairs, serves their JWKS on a loopback port, and signs tokens that Vigil must
//! accept or refuse.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use rcgen::KeyPair;
use serde_json::{Value, json};

use crate::harness::{Vigil, post_query_as};
use crate::otlp::{logs_request, now_ns};

const ISSUER: &str = "https://idp.example.test/";
const AUDIENCE: &str = "vigil";

/// A signing key and its public JWK.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let pair = KeyPair::generate().unwrap(); // ECDSA P-256
        let raw = pair.public_key_raw(); // 0x04 || X || Y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        SigningKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str, scope: &str, service: Option<&str>) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope,
        "iat": now(), "nbf": now() - 5, "exp": now() + 600,
    });
    if let Some(s) = service {
        c["service"] = json!(s);
    }
    c
}

/// The test's identity provider: serves the JWKS it is given and counts fetches.
#[derive(Clone, Default)]
struct Provider {
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<usize>>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> (Provider, String) {
        let p = Provider::default();
        p.publish(keys);
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .with_state(p.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (p, url)
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.jwks.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }
}

async fn serve_jwks(State(p): State<Provider>) -> axum::Json<Value> {
    *p.fetches.lock().unwrap() += 1;
    axum::Json(p.jwks.lock().unwrap().clone())
}

async fn post_logs(vigil: &Vigil, token: &str, service: &str, n: usize) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/logs", vigil.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(token)
        .body(logs_request(service, "oidc", n, now_ns()).encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_identity_provider_are_verified_scoped_and_bound() {
    let k1 = SigningKey::new("k1");
    let (provider, jwks_url) = Provider::start(&[&k1]).await;
    let config = format!(
        "[auth.jwt]\njwks_url = {jwks_url:?}\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\n\
         algorithms = [\"ES256\"]\nservice_claim = \"service\"\n\
         jwks_min_refetch = \"200ms\"\n\
         scope_map = {{ \"telemetry.write\" = \"ingest\", \"telemetry.read\" = \"query\" }}\n"
    );
    let mut vigil = Vigil::start(&config);
    let analyst = k1.sign(&claims("soc-analyst", "telemetry.read admin", None));
    vigil.api_key = Some(analyst.clone());

    // A workload token for checkout: ingests as checkout, not as anyone else, and cannot query.
    let checkout = k1.sign(&claims(
        "checkout-workload",
        "telemetry.write",
        Some("checkout"),
    ));
    assert_eq!(post_logs(&vigil, &checkout, "checkout", 3).await.0, 200);
    let (status, body) = post_logs(&vigil, &checkout, "payments", 2).await;
    assert_eq!(status, 200);
    let refused = ExportLogsServiceResponse::decode(body.as_slice()).unwrap();
    assert_eq!(refused.partial_success.unwrap().rejected_log_records, 2);
    assert_eq!(
        post_query_as(vigil.addrs.api, Some(&checkout), "SELECT 1", "json")
            .await
            .0,
        403
    );
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 3);

    // Refused: expired, not yet valid, another issuer or audience, a key the provider does
    // not publish, and unsigned or HMAC tokens.
    let mut expired = claims("x", "telemetry.write", None);
    expired["exp"] = json!(now() - 3600);
    let mut early = claims("x", "telemetry.write", None);
    early["nbf"] = json!(now() + 3600);
    let mut other_issuer = claims("x", "telemetry.write", None);
    other_issuer["iss"] = json!("https://evil.example.test/");
    let mut other_audience = claims("x", "telemetry.write", None);
    other_audience["aud"] = json!("someone-else");
    let impostor = SigningKey::new("k1"); // same kid, different key
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "k1"})),
        b64(&claims("x", "telemetry.write", None))
    );
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let hmac = jsonwebtoken::encode(
        &hs_header,
        &claims("x", "telemetry.write", None),
        &EncodingKey::from_secret(b"a guessed secret"),
    )
    .unwrap();
    for (what, token) in [
        ("expired", k1.sign(&expired)),
        ("not yet valid", k1.sign(&early)),
        ("other issuer", k1.sign(&other_issuer)),
        ("other audience", k1.sign(&other_audience)),
        (
            "unknown key",
            impostor.sign(&claims("x", "telemetry.write", None)),
        ),
        ("alg none", unsigned),
        ("hmac", hmac),
        ("garbage", "a.b.c".to_owned()),
    ] {
        assert_eq!(
            post_logs(&vigil, &token, "checkout", 1).await.0,
            401,
            "{what}"
        );
    }

    // The provider rotates to a new key: a token naming it makes Vigil fetch the JWKS again.
    let k2 = SigningKey::new("k2");
    provider.publish(&[&k1, &k2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fetches_before = *provider.fetches.lock().unwrap();
    let rotated = k2.sign(&claims(
        "checkout-workload",
        "telemetry.write",
        Some("checkout"),
    ));
    assert_eq!(post_logs(&vigil, &rotated, "checkout", 1).await.0, 200);
    assert!(*provider.fetches.lock().unwrap() > fetches_before);

    // A flood of made-up key ids does not become a flood of JWKS fetches.
    // Tokens are signed first and sent at once, so the window the bound allows is the
    // sending alone, not key generation on a loaded machine.
    let forged: Vec<String> = (0..20)
        .map(|i| {
            SigningKey::new(&format!("forged-{i}")).sign(&claims("x", "telemetry.write", None))
        })
        .collect();
    let fetches_before = *provider.fetches.lock().unwrap();
    let started = std::time::Instant::now();
    let answers =
        futures::future::join_all(forged.iter().map(|t| post_logs(&vigil, t, "checkout", 1))).await;
    assert!(answers.iter().all(|a| a.0 == 401), "{answers:?}");
    // At most one fetch per `jwks_min_refetch` (200 ms), however fast the tokens came.
    let allowed = started.elapsed().as_millis() / 200 + 1;
    let fetched = (*provider.fetches.lock().unwrap() - fetches_before) as u128;
    assert!(
        fetched <= allowed,
        "JWKS fetched {fetched} times, at most {allowed} allowed"
    );
    assert!(fetched < 20);
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 4);
    assert!(
        !vigil.log_text().contains(&checkout),
        "a token reached the log"
    );
}
