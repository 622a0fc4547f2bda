//! `Latchkey-Assertion`: an EdDSA-signed JWT (compact JWS) that tells a protected app who is
//! asking, and the JWK set (`/.well-known/jwks.json`) that verifies it.
//!
//! Composed here with ring, base64 and serde_json (a JWT crate would bring a second crypto
//! stack for three fixed fields): the header is always `{"alg":"EdDSA","typ":"JWT","kid":…}`,
//! and nothing here ever parses a token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::Serialize;

use crate::domain::app_origin::AppOrigin;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::MemberId;
use crate::domain::member_name::MemberName;
use crate::domain::role::Role;

/// How long an assertion is valid: long enough for one request to reach the app.
pub const LIFETIME_SECS: i64 = 60;

/// The Ed25519 key that signs assertions, derived from `LATCHKEY_SECRET_KEY` (so every
/// instance signs alike), with its public half as a JWK.
pub struct AssertionKey {
    pair: Ed25519KeyPair,
    /// Base64url of the raw 32-byte public key (the JWK's `x`).
    x: String,
    /// The RFC 7638 thumbprint of the public JWK.
    kid: String,
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionKey(kid {}, private half redacted)", self.kid)
    }
}

/// What an assertion says. `sub` is the member's id as a string, `aud` the app's origin.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub iss: &'a str,
    #[serde(serialize_with = "as_text")]
    pub aud: &'a AppOrigin,
    #[serde(serialize_with = "as_text")]
    pub sub: MemberId,
    pub email: &'a EmailAddress,
    /// The display name, when the member has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a MemberName>,
    pub role: Role,
    /// The role, then the member's groups, as `Remote-Groups` lists them.
    pub groups: &'a [String],
    pub iat: i64,
    pub exp: i64,
}

fn as_text<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.collect_str(value)
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

impl AssertionKey {
    pub fn from_seed(seed: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(crate::crypto::sha256(thumbprint_input.as_bytes()));
        Ok(Self { pair, x, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK set with this one public key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.x,
                "kid": self.kid,
                "use": "sig",
                "alg": "EdDSA",
            }]
        })
    }

    /// `base64url(header).base64url(claims).base64url(signature)`.
    pub fn sign(&self, claims: &Claims<'_>) -> Result<String, serde_json::Error> {
        let header = serde_json::to_vec(&Header {
            alg: "EdDSA",
            typ: "JWT",
            kid: &self.kid,
        })?;
        let claims = serde_json::to_vec(claims)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.pair.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    #[test]
    fn a_signed_assertion_verifies_with_the_published_key() {
        let key = AssertionKey::from_seed(&[5u8; 32]).unwrap();
        let aud = AppOrigin::parse("https://wiki.example.org").unwrap();
        let email = EmailAddress::parse("ann@example.org").unwrap();
        let token = key
            .sign(&Claims {
                iss: "https://login.example.org",
                aud: &aud,
                sub: MemberId::new(7),
                email: &email,
                name: None,
                role: Role::Member,
                groups: &["member".to_string(), "ops".to_string()],
                iat: 1000,
                exp: 1060,
            })
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        let jwks = key.jwks();
        assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
        let x = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ED25519, &x)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "7");
        assert_eq!(claims["aud"], "https://wiki.example.org");
        assert_eq!(claims["email"], "ann@example.org");
        assert_eq!(claims["role"], "member");
        assert_eq!(claims["groups"], serde_json::json!(["member", "ops"]));
        assert!(claims.get("name").is_none(), "no name, no claim");
        assert_eq!(claims["exp"], 1060);
        // Same seed, same key: every instance signs alike.
        let again = AssertionKey::from_seed(&[5u8; 32]).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(format!("{key:?}").contains("redacted"));
    }
}
