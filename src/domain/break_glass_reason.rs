//! Why an operator reached past the usual ways in by hand (`latchkey link --reason`,
//! `latchkey passkeys reset --reason`): one line of text, written to the audit.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassReason(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BreakGlassReasonError {
    #[error("a reason is required, as in --reason \"lost phone, ticket 123\"")]
    Missing,
    #[error("the reason must be one line of text")]
    NotOneLine,
}

impl BreakGlassReason {
    /// Surrounding spaces are dropped; what is left must be non-empty and hold no control
    /// characters (no line breaks to forge audit lines with).
    pub fn parse(text: &str) -> Result<Self, BreakGlassReasonError> {
        let reason = text.trim();
        if reason.is_empty() {
            return Err(BreakGlassReasonError::Missing);
        }
        if reason.chars().any(char::is_control) {
            return Err(BreakGlassReasonError::NotOneLine);
        }
        Ok(Self(reason.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BreakGlassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_non_empty_line() {
        assert_eq!(
            BreakGlassReason::parse("  lost phone, ticket 123 ")
                .unwrap()
                .as_str(),
            "lost phone, ticket 123"
        );
        assert_eq!(
            BreakGlassReason::parse(" \t "),
            Err(BreakGlassReasonError::Missing)
        );
        assert_eq!(
            BreakGlassReason::parse("ok\nsigned_in admin@x"),
            Err(BreakGlassReasonError::NotOneLine)
        );
    }
}
