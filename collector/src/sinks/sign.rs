//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): every request carries
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`, so a receiver can check that Vigil sent it, unchanged and recently.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A sink's signing secret. Never printed: `Debug` shows only its length.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} bytes)", self.0.len())
    }
}

impl SigningKey {
    /// `whsec_<base64>` (the Standard Webhooks form; the key is the decoded bytes) or the raw
    /// secret bytes.
    pub fn parse(secret: &[u8]) -> Result<Self, String> {
        let key = match secret.strip_prefix(b"whsec_") {
            Some(encoded) => B64
                .decode(encoded)
                .map_err(|e| format!("whsec_ secret is not base64: {e}"))?,
            None => secret.to_vec(),
        };
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "signing secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            B64.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Checks a `webhook-signature` header (space-separated `v1,<sig>` entries, any of which
    /// may match) in constant time; the caller checks the timestamp's age.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|sig| B64.decode(sig).ok())
                .is_some_and(|sig| self.mac(id, timestamp, body).verify_slice(&sig).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_reference_vector() {
        let key = SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &sig));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
        assert!(key.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bm90IGl0 {sig}")
        ));
    }

    #[test]
    fn short_or_malformed_secrets_are_refused() {
        assert!(SigningKey::parse(b"short").is_err());
        assert!(SigningKey::parse(b"whsec_!!!").is_err());
        assert!(SigningKey::parse(b"0123456789abcdef").is_ok());
        assert_eq!(
            format!("{:?}", SigningKey::parse(b"0123456789abcdef").unwrap()),
            "SigningKey(16 bytes)"
        );
    }
}
