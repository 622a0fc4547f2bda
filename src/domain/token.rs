//! Sign-in tokens: `base64url(payload).base64url(HMAC-SHA256(key, payload))`, where the
//! payload is a version byte and a random 128-bit id.
//!
//! The shape is checked before anything is decoded, and the HMAC (in constant time, by ring)
//! before the database is touched; the database only ever sees a digest of the id.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::crypto::random_bytes;
use crate::domain::digests::TokenDigest;

const VERSION: u8 = 1;
const ID_LEN: usize = 16;
const PAYLOAD_LEN: usize = 1 + ID_LEN;
/// base64url without padding of 17 bytes is 23 characters, of 32 bytes 43.
const PAYLOAD_CHARS: usize = 23;
const MAC_CHARS: usize = 43;
pub const TOKEN_LEN: usize = PAYLOAD_CHARS + 1 + MAC_CHARS;

/// The random id a token names. Only its digest is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenId([u8; ID_LEN]);

impl TokenId {
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::sha256(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenId([redacted])")
    }
}

/// The text that goes into the sign-in link. Never logged, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInToken(String);

impl fmt::Debug for SignInToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignInToken([redacted])")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum TokenError {
    #[error("the link is not in the right form")]
    Malformed,
    #[error("the link's signature does not match")]
    BadSignature,
}

impl SignInToken {
    pub fn generate(key: &hmac::Key) -> (Self, TokenId) {
        let id = random_bytes::<ID_LEN>();
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = VERSION;
        payload[1..].copy_from_slice(&id);
        let tag = hmac::sign(key, &payload);
        let text = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        );
        (Self(text), TokenId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks shape, then signature; returns the id only for a token this server signed.
    pub fn verify(key: &hmac::Key, text: &str) -> Result<TokenId, TokenError> {
        let bytes = text.as_bytes();
        let well_shaped = bytes.len() == TOKEN_LEN
            && bytes[PAYLOAD_CHARS] == b'.'
            && bytes.iter().enumerate().all(|(i, b)| {
                i == PAYLOAD_CHARS || b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'
            });
        if !well_shaped {
            return Err(TokenError::Malformed);
        }
        let (payload, mac) = (&text[..PAYLOAD_CHARS], &text[PAYLOAD_CHARS + 1..]);
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(key, &payload, &mac).map_err(|_| TokenError::BadSignature)?;
        if payload.len() != PAYLOAD_LEN || payload[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&payload[1..]);
        Ok(TokenId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[42u8; 32])
    }

    #[test]
    fn a_generated_token_verifies_to_its_id() {
        let (token, id) = SignInToken::generate(&key());
        assert_eq!(token.as_str().len(), TOKEN_LEN);
        assert_eq!(SignInToken::verify(&key(), token.as_str()), Ok(id));
    }

    #[test]
    fn another_key_rejects_it() {
        let (token, _) = SignInToken::generate(&key());
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[43u8; 32]);
        assert_eq!(
            SignInToken::verify(&other, token.as_str()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampering_truncating_and_garbage_are_rejected() {
        let (token, _) = SignInToken::generate(&key());
        let text = token.as_str();
        let truncated = &text[..text.len() - 1];
        assert_eq!(
            SignInToken::verify(&key(), truncated),
            Err(TokenError::Malformed)
        );
        let mut flipped = text.to_string().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            SignInToken::verify(&key(), &flipped),
            Err(TokenError::BadSignature)
        );
        for garbage in [
            "",
            "abc",
            &"x".repeat(TOKEN_LEN),
            &"é".repeat(TOKEN_LEN),
            &"a".repeat(10_000),
        ] {
            assert!(SignInToken::verify(&key(), garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let (token, id) = SignInToken::generate(&key());
        assert!(!format!("{token:?}").contains(token.as_str()));
        assert_eq!(format!("{id:?}"), "TokenId([redacted])");
    }

    proptest! {
        #[test]
        fn no_input_panics_or_verifies(input in ".{0,100}") {
            prop_assert!(SignInToken::verify(&key(), &input).is_err());
        }

        #[test]
        fn any_single_character_change_is_rejected(position in 0..TOKEN_LEN, replacement in "[A-Za-z0-9_.-]") {
            let (token, _) = SignInToken::generate(&key());
            let mut chars: Vec<char> = token.as_str().chars().collect();
            let new = replacement.chars().next().unwrap();
            prop_assume!(chars[position] != new);
            chars[position] = new;
            let changed: String = chars.into_iter().collect();
            prop_assert!(SignInToken::verify(&key(), &changed).is_err());
        }

        #[test]
        fn valid_tokens_round_trip(_seed in 0u8..255) {
            let (token, id) = SignInToken::generate(&key());
            prop_assert_eq!(SignInToken::verify(&key(), token.as_str()), Ok(id));
        }
    }
}
