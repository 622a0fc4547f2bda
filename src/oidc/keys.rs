//! The RSA keys that sign ID tokens and logout tokens: made with openssl (ring signs RSA but
//! cannot make keys), stored sealed with AES-256-GCM under a key derived from
//! `LATCHKEY_SECRET_KEY` (so the database alone cannot sign), the same on every instance.
//! Tokens are verified through `jsonwebtoken`; they are signed with OpenSSL's RSA (PKCS#1
//! v1.5, SHA-256), whose private operation costs about 0.4 ms here against ring's 0.65 ms
//! (the signature is most of a code exchange's cost), on a key parsed once, with the header
//! as `jsonwebtoken` writes it.
//!
//! Each instance keeps the published keys in a [`KeyRing`] and reads them again when the
//! session cache's listener hears that `signing_keys` changed (a rotation on any instance or
//! from the command line), or at the latest a minute after it last read them.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use diesel::PgConnection;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::Serialize;

use crate::models::member::Actor;
use crate::models::oidc::{self as rows, StoredKey};

/// RSA modulus size: 2048 bits or more, as the contract asks.
const RSA_BITS: u32 = 2048;
/// How long a retired key stays published: longer than anything it signed lives.
pub const RETIRED_PUBLISHED_FOR: chrono::Duration = chrono::Duration::hours(24);
/// A key ring is read again at least this often, whatever the listener heard.
const RELOAD_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("making an RSA key: {0}")]
    Generate(#[from] openssl::error::ErrorStack),
    #[error("signing key {0} cannot be opened with this LATCHKEY_SECRET_KEY (was it changed?)")]
    Unseal(String),
    #[error("reading a public key: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("writing a token's claims: {0}")]
    Claims(#[from] serde_json::Error),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("no current signing key")]
    NoCurrentKey,
}

/// One RSA key, ready to sign (its private half) and to publish (its public half).
pub struct SigningKey {
    kid: String,
    private: PKey<Private>,
    decoding: DecodingKey,
    /// The JWK's `n` and `e`, base64url.
    n: String,
    e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(kid {}, private half redacted)", self.kid)
    }
}

impl SigningKey {
    /// From a PKCS#1 DER private key.
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let rsa = openssl::rsa::Rsa::private_key_from_der(der)?;
        let n = URL_SAFE_NO_PAD.encode(rsa.n().to_vec());
        let e = URL_SAFE_NO_PAD.encode(rsa.e().to_vec());
        Ok(Self {
            kid: thumbprint(&n, &e),
            private: PKey::from_rsa(rsa.clone())?,
            decoding: DecodingKey::from_rsa_components(&n, &e)?,
            n,
            e,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }

    /// A compact JWS (RS256) of `claims`, with this key's `kid` and `typ` (`JWT`, or
    /// `logout+jwt` for a logout token).
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let header = Header {
            typ: Some(typ.to_string()),
            kid: Some(self.kid.clone()),
            ..Header::new(Algorithm::RS256)
        };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        // RSA keys sign with PKCS#1 v1.5 padding unless told otherwise: RS256.
        let mut signer = Signer::new(MessageDigest::sha256(), &self.private)?;
        signer.update(signing_input.as_bytes())?;
        let signature = signer.sign_to_vec()?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// RFC 7638: the SHA-256 of the public JWK's required members, in lexicographic order.
fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(crate::crypto::sha256(canonical.as_bytes()))
}

/// The keys one instance signs with and publishes.
#[derive(Debug)]
pub struct KeyRing {
    /// Newest first; the first is the current one.
    keys: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    pub fn current(&self) -> Result<&Arc<SigningKey>, KeyError> {
        self.keys.first().ok_or(KeyError::NoCurrentKey)
    }

    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    pub fn jwks(&self) -> Vec<serde_json::Value> {
        self.keys.iter().map(|key| key.jwk()).collect()
    }

    /// The verifying half of every published key, for a token this instance may have signed.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.find(kid).map(|key| &key.decoding)
    }
}

/// Seals and opens stored keys.
struct Seal(LessSafeKey);

impl Seal {
    fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is exactly what AES-256-GCM takes.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Self(LessSafeKey::new(unbound))
    }

    /// The nonce, then the sealed DER with its tag; the `kid` is bound in as associated data,
    /// so a sealed key cannot be moved under another id.
    fn seal(&self, kid: &str, der: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::crypto::random_bytes::<NONCE_LEN>();
        let mut sealed = der.to_vec();
        // Sealing only fails for inputs beyond AES-GCM's limit (64 GiB).
        #[allow(clippy::expect_used)]
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .expect("a key is far below AES-GCM's limit");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, stored: &StoredKey) -> Result<Vec<u8>, KeyError> {
        let unseal = || KeyError::Unseal(stored.kid.clone());
        if stored.sealed.len() <= NONCE_LEN {
            return Err(unseal());
        }
        let (nonce, sealed) = stored.sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unseal())?;
        let mut in_out = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(stored.kid.as_bytes()), &mut in_out)
            .map_err(|_| unseal())?;
        Ok(plain.to_vec())
    }
}

/// Makes a new key and its sealed form.
fn generate(seal: &Seal) -> Result<(String, Vec<u8>), KeyError> {
    let der = openssl::rsa::Rsa::generate(RSA_BITS)?.private_key_to_der()?;
    let key = SigningKey::from_der(&der)?;
    let sealed = seal.seal(&key.kid, &der);
    Ok((key.kid, sealed))
}

/// The instance's signing keys: the ring, and when it was read (none until first read, so
/// that a server whose database is away still starts and answers 503).
pub struct SigningKeys {
    seal: Seal,
    ring: RwLock<Option<Loaded>>,
}

struct Loaded {
    ring: Arc<KeyRing>,
    at: Instant,
    /// The session cache's count of `signing_keys` changes when this ring was read.
    changes: u64,
}

impl SigningKeys {
    /// Keys sealed and opened with `seal_key`, read at first use.
    pub fn new(seal_key: &[u8; 32]) -> Self {
        Self {
            seal: Seal::new(seal_key),
            ring: RwLock::new(None),
        }
    }

    /// The ring as last read, if it was, and whether it should be read again (`changes` is
    /// the session cache's count of key changes heard).
    pub fn ring(&self, changes: u64) -> (Option<Arc<KeyRing>>, bool) {
        let loaded = self
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match loaded.as_ref() {
            Some(loaded) => (
                Some(loaded.ring.clone()),
                loaded.changes != changes || loaded.at.elapsed() > RELOAD_AFTER,
            ),
            None => (None, true),
        }
    }

    /// Reads the ring (blocking; on the database pool's thread), making the first key if
    /// there is none yet.
    pub fn reload(&self, conn: &mut PgConnection, changes: u64) -> Result<Arc<KeyRing>, KeyError> {
        let ring = Arc::new(read_ring(conn, &self.seal, true)?);
        let mut loaded = self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *loaded = Some(Loaded {
            ring: ring.clone(),
            at: Instant::now(),
            changes,
        });
        Ok(ring)
    }
}

fn read_ring(conn: &mut PgConnection, seal: &Seal, make_first: bool) -> Result<KeyRing, KeyError> {
    let since = Utc::now() - RETIRED_PUBLISHED_FOR;
    let mut stored = rows::published_keys(conn, since)?;
    if stored.iter().all(|key| key.retired_at.is_some()) && make_first {
        let (kid, sealed) = generate(seal)?;
        rows::make_current(conn, &kid, &sealed, false, Actor::Operator("latchkey"))?;
        stored = rows::published_keys(conn, since)?;
    }
    let mut keys = Vec::with_capacity(stored.len());
    // The current key first, then the retired ones newest first.
    stored.sort_by_key(|key| (key.retired_at.is_some(), std::cmp::Reverse(key.created_at)));
    for key in &stored {
        let der = seal.open(key)?;
        keys.push(Arc::new(SigningKey::from_der(&der)?));
    }
    Ok(KeyRing { keys })
}

/// `latchkey keys rotate`: a new current key; the old one stays published for 24 hours.
/// Audited `signing_key_rotated`. Returns the new key's id.
pub fn rotate(conn: &mut PgConnection, seal_key: &[u8; 32]) -> Result<String, KeyError> {
    let seal = Seal::new(seal_key);
    let (kid, sealed) = generate(&seal)?;
    rows::make_current(conn, &kid, &sealed, true, Actor::Operator("cli"))?;
    Ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_seal_and_its_kid() {
        let seal = Seal::new(&[7u8; 32]);
        let (kid, sealed) = generate(&seal).unwrap();
        let stored = StoredKey {
            kid: kid.clone(),
            sealed: sealed.clone(),
            created_at: Utc::now(),
            retired_at: None,
        };
        let der = seal.open(&stored).unwrap();
        assert_eq!(SigningKey::from_der(&der).unwrap().kid(), kid);
        let other = Seal::new(&[8u8; 32]);
        assert!(
            other.open(&stored).is_err(),
            "another secret cannot open it"
        );
        let moved = StoredKey {
            kid: "someone-else".into(),
            ..stored
        };
        assert!(seal.open(&moved).is_err(), "the kid is bound in");
    }

    #[test]
    fn signed_tokens_verify_with_the_published_key_only_as_rs256() {
        let der = openssl::rsa::Rsa::generate(RSA_BITS)
            .unwrap()
            .private_key_to_der()
            .unwrap();
        let key = SigningKey::from_der(&der).unwrap();
        let token = key
            .sign(
                "JWT",
                &serde_json::json!({"sub": "1", "exp": 4_000_000_000u64}),
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.alg, Algorithm::RS256);
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(&token, &key.decoding, &validation).unwrap();
        assert_eq!(claims.claims["sub"], "1");
        let jwk = key.jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB");
    }
}
