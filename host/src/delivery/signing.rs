//! Signatures: Standard Webhooks (`webhook-signature`) and Airy (`X-Airy-Content-Signature`).
//!
//! Standard Webhooks signs `"{id}.{timestamp}.{body}"` with HMAC-SHA256 keyed by the
//! base64-decoded part of the `whsec_` secret and sends `v1,<base64>`; several signatures
//! (during a secret rotation) are space-separated.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
}

/// One `v1,<base64>` signature.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(&secret_key(secret)?).ok()?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header value: one signature per secret in force.
pub fn signature_header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Airy's `X-Airy-Content-Signature`: hex HMAC-SHA256 of the body keyed by the `api_secret`.
pub fn airy_signature(api_secret: &str, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(api_secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn rotation_sends_both_signatures() {
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let b = "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0";
        let header = signature_header(&[a, b], "m", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(a, "m", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(b, "m", 1, b"{}").unwrap());
    }

    #[test]
    fn airy_signature_is_hex_hmac_of_the_body() {
        // Computed independently: printf '{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            airy_signature("secret", b"{}"),
            "77325902caca812dc259733aacd046b73817372c777b8d95b402647474516e13"
        );
    }
}
