//! A group's name (`ops`, `editors`, `on-call-2`): what `Remote-Groups`, the assertion's
//! `groups` claim and an app's rule carry, so it is kept to characters that need no quoting in
//! a comma-separated header, a URL path or a command line.

use std::fmt;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// The longest name; the `groups` table's CHECK constraint says the same.
pub const MAX_LEN: usize = 64;

/// Lower-case ASCII letters, digits and `-`, 1 to [`MAX_LEN`] of them, not starting with `-`
/// (it would read as an option on the command line).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(transparent)]
pub struct GroupName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupNameError {
    #[error("a group needs a name")]
    Empty,
    #[error("a group's name is at most {MAX_LEN} characters")]
    TooLong,
    #[error(
        "a group's name is lower-case letters, digits and `-` (not first), as in ops or on-call"
    )]
    BadCharacters,
}

impl GroupName {
    /// Surrounding blanks are dropped; nothing else is changed (`Ops` is refused rather than
    /// folded, so that what the admin typed is what apps receive).
    pub fn parse(text: &str) -> Result<Self, GroupNameError> {
        let name = text.trim();
        if name.is_empty() {
            return Err(GroupNameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(GroupNameError::TooLong);
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !name.chars().all(allowed) || name.starts_with('-') {
            return Err(GroupNameError::BadCharacters);
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for GroupName {
    type Err = GroupNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl ToSql<Text, Pg> for GroupName {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

/// Parsed again on the way out: a name written past Latchkey that the CHECK constraint let
/// through but this rule does not is an error, not a header value.
impl FromSql<Text, Pg> for GroupName {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        Ok(Self::parse(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_lower_case_letters_digits_and_dashes() {
        assert_eq!(GroupName::parse(" ops ").unwrap().as_str(), "ops");
        assert_eq!(GroupName::parse("on-call-2").unwrap().as_str(), "on-call-2");
        assert_eq!(GroupName::parse(" "), Err(GroupNameError::Empty));
        for bad in [
            "Ops",
            "ops,admin",
            "ops team",
            "-ops",
            "ops_team",
            "öps",
            "o\nps",
        ] {
            assert!(GroupName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            GroupName::parse(&"a".repeat(MAX_LEN + 1)),
            Err(GroupNameError::TooLong)
        );
        assert!(GroupName::parse(&"a".repeat(MAX_LEN)).is_ok());
    }

    proptest! {
        /// Whatever is accepted can sit in a comma-separated header as it is.
        #[test]
        fn an_accepted_name_needs_no_quoting(text in "\\PC{0,70}") {
            if let Ok(name) = GroupName::parse(&text) {
                prop_assert!(!name.as_str().is_empty() && name.as_str().len() <= MAX_LEN);
                prop_assert!(name
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert_eq!(GroupName::parse(name.as_str()), Ok(name.clone()));
            }
        }

        #[test]
        fn every_well_formed_name_is_accepted(text in "[a-z0-9][a-z0-9-]{0,63}") {
            let name = GroupName::parse(&text).unwrap();
            prop_assert_eq!(name.as_str(), text.as_str());
        }
    }
}
