//! The one place where untrusted text becomes an email address.

use std::fmt;

/// The longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// An email address in canonical form: trimmed, domain lower-cased and in punycode.
///
/// Two spellings of the same address (`Ann@Exämple.ORG ` and `Ann@xn--exmple-cua.org`)
/// parse to equal values, so the canonical string is what members are looked up by.
///
/// Stored as that string (`members.email`, `sign_in_requests.requested_email`), which diesel
/// reads back through [`EmailAddress::parse`]: a row that is not an address is an error, not
/// a member.
#[derive(
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub struct EmailAddress(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmailAddressError {
    #[error("Enter an email address.")]
    Empty,
    #[error("That address is too long (at most 254 characters).")]
    TooLong,
    #[error("That address contains characters that are not allowed.")]
    ControlCharacter,
    #[error("That does not look like an email address (name@example.org).")]
    Malformed,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailAddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailAddressError::Empty);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(EmailAddressError::ControlCharacter);
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(EmailAddressError::TooLong);
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or(EmailAddressError::Malformed)?;
        // Address literals (`user@[10.0.0.1]`) are valid RFC 5321 but never a team address.
        if local.is_empty() || domain.is_empty() || domain.starts_with('[') {
            return Err(EmailAddressError::Malformed);
        }
        let domain = canonical_domain(domain).ok_or(EmailAddressError::Malformed)?;
        let address =
            lettre::Address::new(local, &domain).map_err(|_| EmailAddressError::Malformed)?;
        let canonical = address.to_string();
        if canonical.len() > MAX_EMAIL_LEN {
            return Err(EmailAddressError::TooLong);
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }

    /// The mailbox this address delivers to; see [`MailboxKey`].
    pub fn mailbox_key(&self) -> MailboxKey {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let local = unquote(local);
        // As Postfix's `recipient_delimiter` does, a `+` that starts the local part is not a tag.
        let base = match local.find('+') {
            Some(at) if at > 0 => &local[..at],
            _ => &local[..],
        };
        MailboxKey(format!("{}@{domain}", base.to_lowercase()))
    }

    pub fn to_lettre(&self) -> lettre::Address {
        // Parsing above went through lettre's own validation, so this cannot fail.
        lettre::Address::new_dangerous(
            self.0.rsplit_once('@').map_or("", |(local, _)| local),
            self.domain(),
        )
    }
}

/// Which mailbox an address reaches: the local part lower-cased and without a `+tag`, at the
/// canonical domain. `Carol@corp.test`, `carol+x@corp.test` and `"carol"@corp.test` share
/// `carol@corp.test`, because real mail servers deliver all three to Carol.
///
/// It is a comparison key, never an address to send to: mail goes to a member's stored
/// address. Provider-specific rules (Gmail ignoring dots) are not applied. Stored in
/// `members.mailbox_key`; the migration that added the column computes the same key in SQL.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MailboxKey(String);

impl MailboxKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MailboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The content of a quoted local part (`"carol"` is `carol`), backslash escapes undone;
/// any other local part as it is.
fn unquote(local: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return local.into();
    };
    let mut unquoted = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => unquoted.extend(chars.next()),
            c => unquoted.push(c),
        }
    }
    unquoted.into()
}

/// Lower-cased punycode form of a domain, or `None` when it is not a valid host name.
pub fn canonical_domain(domain: &str) -> Option<String> {
    let domain = domain.trim().trim_end_matches('.');
    if domain.is_empty() || domain.chars().any(char::is_control) {
        return None;
    }
    let ascii = idna::domain_to_ascii_strict(domain).ok()?;
    (!ascii.is_empty()).then_some(ascii)
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for EmailAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for EmailAddress {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
            &self.0, out,
        )
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for EmailAddress {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as diesel::deserialize::FromSql<
            diesel::sql_types::Text,
            diesel::pg::Pg,
        >>::from_sql(bytes)?;
        let address = EmailAddress::parse(&text)?;
        if address.0 != text {
            return Err(format!("stored address {text:?} is not in canonical form").into());
        }
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_form_trims_and_lowercases_the_domain() {
        let a = EmailAddress::parse("  Ann@Example.ORG ").unwrap();
        assert_eq!(a.as_str(), "Ann@example.org");
        assert_eq!(a.domain(), "example.org");
    }

    #[test]
    fn unicode_domains_become_punycode() {
        let a = EmailAddress::parse("ann@Exämple.org").unwrap();
        assert_eq!(a.as_str(), "ann@xn--exmple-cua.org");
        assert_eq!(a, EmailAddress::parse("ann@xn--exmple-cua.org").unwrap());
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "   ",
            "ann",
            "@example.org",
            "ann@",
            "ann@@example.org",
            "ann@exa mple.org",
            "ann@[10.0.0.1]",
            "a b@example.org",
            "ann@-example.org",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn header_injection_is_impossible() {
        assert_eq!(
            EmailAddress::parse("ann@example.org\r\nBcc: eve@evil.org"),
            Err(EmailAddressError::ControlCharacter)
        );
        assert_eq!(
            EmailAddress::parse("ann\n@example.org"),
            Err(EmailAddressError::ControlCharacter)
        );
    }

    #[test]
    fn length_limit_is_254() {
        let local = "a".repeat(64);
        let domain = format!(
            "{}.{}.{}.org",
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60)
        );
        let ok = format!("{local}@{domain}");
        assert!(ok.len() <= 254, "{}", ok.len());
        assert!(EmailAddress::parse(&ok).is_ok());
        let too_long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(
            EmailAddress::parse(&too_long),
            Err(EmailAddressError::TooLong)
        );
    }

    fn key(input: &str) -> String {
        EmailAddress::parse(input)
            .unwrap()
            .mailbox_key()
            .as_str()
            .to_owned()
    }

    #[test]
    fn every_spelling_of_one_mailbox_has_one_key() {
        for spelling in [
            "carol@corp.test",
            "Carol@corp.test",
            "CAROL@CORP.TEST",
            "carol+x@corp.test",
            "CAROL+y@corp.test",
            "carol+@corp.test",
            "carol+a+b@corp.test",
            " Carol+x@Corp.Test. ",
            "\"carol\"@corp.test",
            "\"Carol+x\"@corp.test",
        ] {
            assert_eq!(key(spelling), "carol@corp.test", "{spelling:?}");
        }
        assert_eq!(key("Ann@Exämple.org"), "ann@xn--exmple-cua.org");
        assert_eq!(key("ÇAROL@corp.test"), "çarol@corp.test");
    }

    #[test]
    fn other_mailboxes_keep_other_keys() {
        assert_ne!(key("carol@corp.test"), key("carol@other.test"));
        assert_ne!(key("carol@corp.test"), key("caroline@corp.test"));
        assert_ne!(key("carol@corp.test"), key("c.arol@corp.test"));
        // A leading `+` is no delimiter: `+x` is a mailbox of its own, not everyone's tag.
        assert_eq!(key("+x@corp.test"), "+x@corp.test");
        assert_ne!(key("+x@corp.test"), key("+y@corp.test"));
    }

    #[test]
    fn the_key_is_for_comparing_and_the_address_is_kept() {
        let address = EmailAddress::parse("Carol+x@corp.test").unwrap();
        assert_eq!(address.mailbox_key().as_str(), "carol@corp.test");
        assert_eq!(address.as_str(), "Carol+x@corp.test");
    }

    proptest! {
        #[test]
        fn tags_and_case_never_change_the_key(
            local in "[a-zA-Z0-9._-]{1,20}",
            tag in "[a-zA-Z0-9.+_-]{0,20}",
            domain in "[a-zA-Z]{1,20}\\.[a-zA-Z]{2,6}",
        ) {
            prop_assume!(!local.starts_with('.') && !local.ends_with('.') && !local.contains(".."));
            let plain = EmailAddress::parse(&format!("{local}@{domain}")).unwrap();
            let Ok(tagged) = EmailAddress::parse(&format!("{}+{tag}@{}", local.to_uppercase(), domain.to_uppercase())) else {
                // A tag ending in `.` or holding `..` is no address; nothing to compare.
                return Ok(());
            };
            prop_assert_eq!(tagged.mailbox_key(), plain.mailbox_key());
            prop_assert_eq!(
                plain.mailbox_key().to_string(),
                format!("{}@{}", local.to_lowercase(), domain.to_lowercase())
            );
        }

        #[test]
        fn the_key_is_a_fixed_point(input in ".{0,300}") {
            if let Ok(address) = EmailAddress::parse(&input) {
                let key = address.mailbox_key();
                let at_domain = format!("@{}", address.domain());
                prop_assert!(key.as_str().ends_with(&at_domain));
                // Where the key is itself an address, it is its own key.
                if let Ok(again) = EmailAddress::parse(key.as_str()) {
                    prop_assert_eq!(again.mailbox_key(), key);
                }
            }
        }

        #[test]
        fn never_panics_and_output_is_clean(input in ".{0,300}") {
            if let Ok(address) = EmailAddress::parse(&input) {
                prop_assert!(address.as_str().len() <= MAX_EMAIL_LEN);
                prop_assert!(!address.as_str().chars().any(char::is_control));
                prop_assert_eq!(EmailAddress::parse(address.as_str()), Ok(address.clone()));
            }
        }

        #[test]
        fn simple_addresses_round_trip(local in "[a-z0-9._+-]{1,20}", domain in "[a-z]{1,20}\\.[a-z]{2,6}") {
            prop_assume!(!local.starts_with('.') && !local.ends_with('.') && !local.contains(".."));
            let input = format!("{local}@{domain}");
            let parsed = EmailAddress::parse(&input).unwrap();
            prop_assert_eq!(parsed.as_str(), input.as_str());
        }
    }
}
