//! The emulator's signing keys and JWTs: RS256, published as a JWKS, rotatable on demand with
//! the previous key still published (and still accepted) until the next rotation — as the
//! identity platform does (entra-docs: docs/identity-platform/signing-key-rollover.md).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::Sha256;

/// One RSA key pair and its key id.
pub struct KeyPair {
    pub kid: String,
    signing: SigningKey<Sha256>,
    public: RsaPublicKey,
}

impl KeyPair {
    pub fn generate() -> Self {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA-2048 key generation");
        let public = private.to_public_key();
        // Entra's kid is the certificate thumbprint in base64url; a hash of the modulus stands in.
        let digest = <Sha256 as sha2::Digest>::digest(public.n().to_bytes_be());
        Self {
            kid: B64.encode(&digest[..20]),
            signing: SigningKey::new(private),
            public,
        }
    }

    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": B64.encode(self.public.n().to_bytes_be()),
            "e": B64.encode(self.public.e().to_bytes_be()),
        })
    }
}

/// The current key, which signs, and the previous one, still published and accepted.
pub struct KeySet {
    pub current: KeyPair,
    pub previous: Option<KeyPair>,
}

impl KeySet {
    pub fn new() -> Self {
        Self {
            current: KeyPair::generate(),
            previous: None,
        }
    }

    pub fn rotate(&mut self) {
        let old = std::mem::replace(&mut self.current, KeyPair::generate());
        self.previous = Some(old);
    }

    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(KeyPair::jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` as a compact JWS. `extra_header` adds header fields (Graph tokens carry
    /// a `nonce` there, which is why nobody but Graph can validate them).
    pub fn sign(&self, claims: &Value, extra_header: Option<Value>) -> String {
        let mut header = json!({"typ": "JWT", "alg": "RS256", "kid": self.current.kid});
        if let Some(Value::Object(extra)) = extra_header {
            header.as_object_mut().expect("object").extend(extra);
        }
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature: Signature = self.current.signing.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature.to_bytes()))
    }

    /// Verifies a token this emulator signed and returns its claims (expiry is the caller's
    /// business). Only RS256 with one of the published keys is accepted.
    pub fn verify(&self, token: &str) -> Result<Value, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("JWT is not well formed: it must have three segments");
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("JWT header is not valid")?;
        if header["alg"] != "RS256" {
            return Err("JWT signature algorithm is not supported");
        }
        let key = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| header["kid"] == k.kid.as_str())
            .ok_or("JWT signing key is not found")?;
        let signature = B64
            .decode(s)
            .ok()
            .and_then(|b| Signature::try_from(b.as_slice()).ok())
            .ok_or("JWT signature is not valid")?;
        VerifyingKey::<Sha256>::new(key.public.clone())
            .verify(format!("{h}.{c}").as_bytes(), &signature)
            .map_err(|_| "JWT signature is invalid")?;
        B64.decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("JWT claims are not valid")
    }
}

impl Default for KeySet {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_across_one_rotation_only() {
        let mut keys = KeySet::new();
        let token = keys.sign(&json!({"sub": "x"}), None);
        assert_eq!(keys.verify(&token).unwrap()["sub"], "x");
        keys.rotate();
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2, "the old key stays published");
        assert!(keys.verify(&token).is_ok());
        keys.rotate();
        assert_eq!(keys.verify(&token).unwrap_err(), "JWT signing key is not found");
        let mut forged = keys.sign(&json!({"sub": "x"}), None);
        forged.push('A');
        assert!(keys.verify(&forged).is_err());
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode(r#"{"sub":"x"}"#));
        assert_eq!(keys.verify(&none).unwrap_err(), "JWT signature algorithm is not supported");
    }
}
