//! Key derivation: one secret (`LATCHKEY_SECRET_KEY`) feeds HKDF, and every purpose gets its
//! own derived key, so a value signed for one purpose (a CSRF cookie) can never pass as
//! another (a sign-in token). Above `crypto` (randomness, digests), below everything that
//! signs.

use std::path::Path;

use anyhow::Context as _;
use ring::{hkdf, hmac};
use secrecy::{ExposeSecret as _, SecretSlice};

use crate::crypto::random_bytes;

/// Keys derived from the one configured secret.
#[derive(Clone)]
pub struct Keys {
    /// Encrypts the session cookie (actix's `Key` wants 64 bytes).
    pub cookie: actix_web::cookie::Key,
    /// Signs sign-in tokens.
    pub token: hmac::Key,
    /// Signs the pre-sign-in browser cookie (CSRF and link binding).
    pub browser: hmac::Key,
    /// Signs the login audit's checkpoints; never stored in the database, so whoever can
    /// write there cannot forge one.
    pub audit: hmac::Key,
    /// The Ed25519 seed of the key that signs `Latchkey-Assertion` for protected apps (the
    /// forward-auth room makes the key; its public half is in the JWK set).
    pub assertion_seed: [u8; 32],
    /// Seals the OpenID Connect signing keys stored in the database (AES-256-GCM): whoever
    /// reads the database alone cannot sign an ID token.
    pub signing_key_seal: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, purpose: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let purposes = [purpose];
    // `expand` only fails when asked for more than 255 * 32 bytes, far above what we use.
    #[allow(clippy::expect_used)]
    prk.expand(&purposes, OutputLen(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF output length is within bounds");
    out
}

impl Keys {
    pub fn derive(secret: &SecretSlice<u8>) -> Self {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"latchkey/v1").extract(secret.expose_secret());
        Self {
            cookie: actix_web::cookie::Key::from(&expand(&prk, b"session-cookie", 64)),
            token: hmac::Key::new(hmac::HMAC_SHA256, &expand(&prk, b"sign-in-token", 32)),
            browser: hmac::Key::new(hmac::HMAC_SHA256, &expand(&prk, b"browser-cookie", 32)),
            audit: hmac::Key::new(hmac::HMAC_SHA256, &expand(&prk, b"audit-checkpoint", 32)),
            assertion_seed: seed(&expand(&prk, b"app-assertion", 32)),
            signing_key_seal: seed(&expand(&prk, b"oidc-signing-key-seal", 32)),
        }
    }
}

fn seed(bytes: &[u8]) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(bytes);
    seed
}

/// The development secret: read from the data dir, or generated there once.
pub fn load_or_create_dev_secret(data_dir: &Path) -> anyhow::Result<SecretSlice<u8>> {
    let path = data_dir.join("secret_key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex::decode(text.trim()).with_context(|| {
            format!("{} is not hex; delete it to make a new one", path.display())
        })?;
        anyhow::ensure!(bytes.len() >= 32, "{} is too short", path.display());
        return Ok(SecretSlice::from(bytes));
    }
    crate::private_fs::create_private_dir(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let bytes = random_bytes::<32>().to_vec();
    crate::private_fs::write_private_file(&path, hex::encode(&bytes).as_bytes())
        .with_context(|| format!("creating {}", path.display()))?;
    log::warn!(
        "LATCHKEY_SECRET_KEY is not set: generated a development key in {}. Set LATCHKEY_SECRET_KEY before serving anything but localhost.",
        path.display()
    );
    Ok(SecretSlice::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_different_keys() {
        let keys = Keys::derive(&SecretSlice::from(vec![7u8; 32]));
        let a = hmac::sign(&keys.token, b"x");
        let b = hmac::sign(&keys.browser, b"x");
        assert_ne!(a.as_ref(), b.as_ref());
        let again = Keys::derive(&SecretSlice::from(vec![7u8; 32]));
        assert_eq!(a.as_ref(), hmac::sign(&again.token, b"x").as_ref());
    }

    #[test]
    fn dev_secret_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-secret-{}",
            hex::encode(random_bytes::<8>())
        ));
        let first = load_or_create_dev_secret(&dir).unwrap();
        let second = load_or_create_dev_secret(&dir).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 32);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir.join("secret_key")),
            0o600,
            "the key is its owner's alone"
        );
        assert_eq!(mode(&dir), 0o700, "the data dir is its owner's alone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
