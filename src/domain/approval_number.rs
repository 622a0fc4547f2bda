//! The two-digit number the asking browser shows, typed on the device that holds the link.

use std::fmt;

use crate::crypto::random_below;

/// 10 to 99, so it always shows as two digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApprovalNumber(i16);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Type the two-digit number that the other device shows.")]
pub struct ApprovalNumberError;

impl ApprovalNumber {
    pub fn generate() -> Self {
        Self(10 + random_below(90) as i16)
    }

    /// What people type: two digits, surrounding spaces ignored.
    pub fn parse(input: &str) -> Result<Self, ApprovalNumberError> {
        let digits = input.trim();
        if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApprovalNumberError);
        }
        digits
            .parse::<i16>()
            .ok()
            .filter(|n| (10..=99).contains(n))
            .map(Self)
            .ok_or(ApprovalNumberError)
    }

    /// As stored (`sign_in_requests.approval_number`, checked 10..=99 by the table).
    pub fn from_stored(value: i16) -> Self {
        Self(value)
    }

    pub fn value(self) -> i16 {
        self.0
    }
}

/// The number is a secret of the asking browser's page: it never reaches a log.
impl fmt::Debug for ApprovalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApprovalNumber([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_digits_only() {
        assert_eq!(
            ApprovalNumber::parse(" 42 ").map(ApprovalNumber::value),
            Ok(42)
        );
        for bad in ["", "4", "09", "100", "4a", "-4", "+42", "4 2", "４２"] {
            assert_eq!(
                ApprovalNumber::parse(bad),
                Err(ApprovalNumberError),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn generated_numbers_parse_back(_seed in 0u8..50) {
            let number = ApprovalNumber::generate();
            let shown = number.value().to_string();
            prop_assert_eq!(ApprovalNumber::parse(&shown), Ok(number));
        }
    }
}
