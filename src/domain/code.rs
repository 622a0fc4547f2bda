//! The 6-digit code in the sign-in email, for typing into the asking browser.

use std::fmt;

use ring::hmac;

use crate::crypto::random_below;
use crate::domain::digests::{CodeDigest, TokenDigest};

#[derive(Clone, PartialEq, Eq)]
pub struct SignInCode(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Enter the 6-digit code from the email.")]
pub struct CodeError;

impl SignInCode {
    pub fn generate() -> Self {
        Self(format!("{:06}", random_below(1_000_000)))
    }

    /// Accepts what people type: spaces or a dash between the digits are ignored.
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        if input.len() > 32 {
            return Err(CodeError);
        }
        let digits: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(CodeError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A keyed digest, bound to one request: a million codes cannot be tried offline
    /// against a copy of the table without the key.
    pub fn digest(&self, key: &hmac::Key, token_digest: &TokenDigest) -> CodeDigest {
        let mut message = b"code|".to_vec();
        message.extend_from_slice(token_digest.as_bytes());
        message.push(b'|');
        message.extend_from_slice(self.0.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(hmac::sign(key, &message).as_ref());
        CodeDigest::new(bytes)
    }
}

impl fmt::Debug for SignInCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignInCode([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_six_digits() {
        for _ in 0..100 {
            let code = SignInCode::generate();
            assert_eq!(code.as_str().len(), 6);
            assert_eq!(SignInCode::parse(code.as_str()), Ok(code));
        }
    }

    #[test]
    fn typing_variations_are_accepted_and_nonsense_is_not() {
        assert_eq!(SignInCode::parse(" 123 456 ").unwrap().as_str(), "123456");
        assert_eq!(SignInCode::parse("123-456").unwrap().as_str(), "123456");
        for bad in ["", "12345", "1234567", "abcdef", "12345६", &"1".repeat(100)] {
            assert!(SignInCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_are_bound_to_the_request() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1u8; 32]);
        let code = SignInCode::parse("123456").unwrap();
        let (a, b) = (TokenDigest::sha256(b"a"), TokenDigest::sha256(b"b"));
        assert_ne!(code.digest(&key, &a), code.digest(&key, &b));
        assert_eq!(code.digest(&key, &a), code.digest(&key, &a));
    }
}
