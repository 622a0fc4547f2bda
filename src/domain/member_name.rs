//! A member's display name ("Ann Lee"): shown on pages and handed to apps in `Remote-Name` and
//! the assertion's `name` claim, so it is one line of printable text. A header carries it as
//! it is, and a control character there could split or forge headers, and a bidi override
//! could make a name read as another.

use std::fmt;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// The longest name, in characters; the `members.name` CHECK constraint says the same.
pub const MAX_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(transparent)]
pub struct MemberName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemberNameError {
    #[error("a name is at most {MAX_CHARS} characters")]
    TooLong,
    #[error("a name is one line of text, without control characters")]
    NotOneLine,
}

/// Characters that are not controls (`char::is_control`) but still break a line or turn the
/// text's direction; the CHECK constraint lists the same ranges.
fn breaks_the_line(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl MemberName {
    /// A name typed in a form or on the command line: surrounding blanks are dropped, and
    /// nothing left means "no name" (`None`), so clearing the field removes the name.
    pub fn parse(text: &str) -> Result<Option<Self>, MemberNameError> {
        let name = text.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if name.chars().any(breaks_the_line) {
            return Err(MemberNameError::NotOneLine);
        }
        if name.chars().count() > MAX_CHARS {
            return Err(MemberNameError::TooLong);
        }
        Ok(Some(Self(name.to_string())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ToSql<Text, Pg> for MemberName {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

/// Checked again on the way out, so a name written past Latchkey never reaches a header
/// with a line break in it. Only that is checked: the CHECK constraint keeps the rest, and a
/// stored name with, say, a no-break space at its end (which `parse` trims and PostgreSQL's
/// `btrim` does not) must not make its member unreadable.
impl FromSql<Text, Pg> for MemberName {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        if text.chars().any(breaks_the_line) {
            return Err(MemberNameError::NotOneLine.into());
        }
        Ok(Self(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_name_is_one_line_of_text() {
        let name = MemberName::parse("  Ann Lee ").unwrap().unwrap();
        assert_eq!(name.as_str(), "Ann Lee");
        assert_eq!(
            MemberName::parse("Zoë Ñúñez-O'Brien")
                .unwrap()
                .unwrap()
                .as_str(),
            "Zoë Ñúñez-O'Brien"
        );
        assert_eq!(MemberName::parse(" \t "), Ok(None), "blank: no name");
        for bad in [
            "Ann\nLee",
            "Ann\r\nRemote-User: boss@x.org",
            "Ann\tLee",
            "Ann\u{7f}",
            "Ann\u{85}Lee",
            "Ann\u{2028}Lee",
            "Ann\u{202e}eeL",
            "Ann\u{2067}Lee",
        ] {
            assert_eq!(
                MemberName::parse(bad),
                Err(MemberNameError::NotOneLine),
                "{bad:?}"
            );
        }
        assert!(MemberName::parse(&"é".repeat(MAX_CHARS)).unwrap().is_some());
        assert_eq!(
            MemberName::parse(&"é".repeat(MAX_CHARS + 1)),
            Err(MemberNameError::TooLong)
        );
    }

    proptest! {
        /// Whatever is accepted is a valid header value and a single line.
        #[test]
        fn an_accepted_name_is_a_safe_header_value(text in "\\PC{0,30}|.{0,30}") {
            if let Ok(Some(name)) = MemberName::parse(&text) {
                prop_assert!(name
                    .as_str()
                    .bytes()
                    .all(|b| b >= 0x20 && b != 0x7f));
                prop_assert!(!name.as_str().chars().any(breaks_the_line));
                prop_assert_eq!(MemberName::parse(name.as_str()), Ok(Some(name.clone())));
            }
        }
    }
}
