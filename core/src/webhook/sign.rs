//! The webhook signature: `x-herald-signature: sha256=<hex>`, the
//! HMAC-SHA256 of the raw request body with `HERALD_WEBHOOK_SECRET`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-herald-signature";
/// The header carrying the send time, in ms since the Unix epoch (the same
/// value as the body's `sent_at`, which the signature covers).
pub const TIMESTAMP_HEADER: &str = "x-herald-timestamp";

fn mac(secret: &[u8]) -> Option<Hmac<Sha256>> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()
}

/// `sha256=<lowercase hex HMAC-SHA256 of body>`. HMAC takes a key of any
/// length, so this cannot fail; an unusable key would sign with nothing.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let Some(mut m) = mac(secret) else { return String::from("sha256=") };
    m.update(body);
    let digest = m.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `header` (the `x-herald-signature` value) signs `body`, in
/// constant time: what a receiver does.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else { return false };
    let Some(bytes) = decode_hex(hex) else { return false };
    let Some(mut m) = mac(secret) else { return false };
    m.update(body);
    m.verify_slice(&bytes).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    s.as_bytes().chunks(2).map(|p| Some(digit(*p.first()?)? << 4 | digit(*p.get(1)?)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_verification() {
        // RFC 4231 test case 2.
        let s = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s));
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s.to_uppercase().replace("SHA256=", "sha256=")));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &s), "another body");
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &s), "another key");
        assert!(!verify(b"Jefe", b"x", "sha256=zz"));
        assert!(!verify(b"Jefe", b"x", "md5=00"));
    }
}
