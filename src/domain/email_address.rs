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

    /// The mailbox this address delivers to under the default rule (`plus`): what
    /// `members.mailbox_key` holds, as a record written with the row (the migration that added
    /// the column computes the same key in SQL). Admission compares keys under the configured
    /// rule instead, with [`EmailAddress::mailbox_key_by`]. See [`MailboxKey`].
    pub fn mailbox_key(&self) -> MailboxKey {
        self.mailbox_key_by(MailboxRule::default())
    }

    /// The mailbox this address delivers to under `rule` (`LATCHKEY_MAILBOX_KEY`): the local
    /// part unquoted and lower-cased, cut at the first tag delimiter the rule names (a
    /// delimiter that starts the local part is no tag, as with Postfix's
    /// `recipient_delimiter`), then without dots when the rule says `dots`, at the canonical
    /// domain.
    pub fn mailbox_key_by(&self, rule: MailboxRule) -> MailboxKey {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let local = unquote(local).to_lowercase();
        let base = match local.find(|c| rule.is_tag_delimiter(c)) {
            Some(at) if at > 0 => &local[..at],
            _ => &local[..],
        };
        let base = if rule.dots {
            let undotted: String = base.chars().filter(|&c| c != '.').collect();
            // A (quoted) local part of dots alone keeps them: it is still someone's mailbox.
            if undotted.is_empty() {
                base.to_owned()
            } else {
                undotted
            }
        } else {
            base.to_owned()
        };
        MailboxKey(format!("{base}@{domain}"))
    }

    /// Whether the local part holds only printable ASCII letters, digits and `.`, `_`, `-`,
    /// `+`. Only such an address may join through `LATCHKEY_ALLOWED_DOMAINS`: the others
    /// (`%` and `!` routing, quotes, invisible characters, Cyrillic `с` for Latin `c`) can
    /// reach or impersonate another person's mailbox in ways no key can fold, and read like
    /// someone else on `/team`. An admin may still list them by hand.
    pub fn has_plain_local_part(&self) -> bool {
        let local = self.0.rsplit_once('@').map_or("", |(local, _)| local);
        !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    }

    pub fn to_lettre(&self) -> lettre::Address {
        // Parsing above went through lettre's own validation, so this cannot fail.
        lettre::Address::new_dangerous(
            self.0.rsplit_once('@').map_or("", |(local, _)| local),
            self.domain(),
        )
    }
}

/// Which mailbox an address reaches, under a [`MailboxRule`]: by default the local part
/// lower-cased and without a `+tag`, at the canonical domain. `Carol@corp.test`,
/// `carol+x@corp.test` and `"carol"@corp.test` share `carol@corp.test`, because real mail
/// servers deliver all three to Carol.
///
/// It is a comparison key, never an address to send to: mail goes to a member's stored
/// address. Provider rules beyond the configured ones are not guessed: `c.arol@` is Carol
/// only where `LATCHKEY_MAILBOX_KEY` says `dots`.
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

/// One reduction `LATCHKEY_MAILBOX_KEY` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxReduction {
    /// Drop a `+tag` (`carol+x` is `carol`).
    Plus,
    /// Drop a `-tag` (`carol-x` is `carol`), as servers with `-` as their delimiter do.
    Minus,
    /// Ignore dots (`c.arol` is `carol`), as Gmail does.
    Dots,
}

impl MailboxReduction {
    const ALL: [Self; 3] = [Self::Plus, Self::Minus, Self::Dots];

    fn name(self) -> &'static str {
        match self {
            Self::Plus => "plus",
            Self::Minus => "minus",
            Self::Dots => "dots",
        }
    }
}

/// `LATCHKEY_MAILBOX_KEY`: how the addresses at an allowed domain are reduced to one mailbox
/// ([`EmailAddress::mailbox_key_by`]). Which spellings reach one person is the mail server's
/// business, so the operator says it; the default, `plus`, is what nearly every server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxRule {
    plus: bool,
    minus: bool,
    dots: bool,
}

impl Default for MailboxRule {
    fn default() -> Self {
        Self::of(&[MailboxReduction::Plus])
    }
}

impl MailboxRule {
    /// The rule made of these reductions (none: the key only folds case).
    pub fn of(reductions: &[MailboxReduction]) -> Self {
        let has = |r| reductions.contains(&r);
        Self {
            plus: has(MailboxReduction::Plus),
            minus: has(MailboxReduction::Minus),
            dots: has(MailboxReduction::Dots),
        }
    }

    /// The setting's syntax: `plus`, `minus`, `dots`, comma-separated, in any order.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut reductions = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let reduction = MailboxReduction::ALL
                .into_iter()
                .find(|r| r.name().eq_ignore_ascii_case(item))
                .ok_or_else(|| {
                    format!("{item:?} is not a reduction; use plus, minus or dots, comma-separated")
                })?;
            reductions.push(reduction);
        }
        if reductions.is_empty() {
            return Err("name at least one of plus, minus, dots".into());
        }
        Ok(Self::of(&reductions))
    }

    pub fn reduces(&self, reduction: MailboxReduction) -> bool {
        match reduction {
            MailboxReduction::Plus => self.plus,
            MailboxReduction::Minus => self.minus,
            MailboxReduction::Dots => self.dots,
        }
    }

    fn is_tag_delimiter(&self, c: char) -> bool {
        (self.plus && c == '+') || (self.minus && c == '-')
    }
}

/// The setting's syntax, which [`MailboxRule::parse`] reads back.
impl fmt::Display for MailboxRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = MailboxReduction::ALL
            .into_iter()
            .filter(|r| self.reduces(*r))
            .map(MailboxReduction::name)
            .collect();
        f.write_str(&names.join(","))
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

    fn key_by(rule: &str, input: &str) -> String {
        EmailAddress::parse(input)
            .unwrap()
            .mailbox_key_by(MailboxRule::parse(rule).unwrap())
            .as_str()
            .to_owned()
    }

    #[test]
    fn the_rule_parses_from_the_setting_and_back() {
        assert_eq!(MailboxRule::parse("plus").unwrap(), MailboxRule::default());
        let all = MailboxRule::parse(" dots, PLUS ,minus").unwrap();
        assert_eq!(
            all,
            MailboxRule::of(&[
                MailboxReduction::Plus,
                MailboxReduction::Minus,
                MailboxReduction::Dots
            ])
        );
        assert_eq!(all.to_string(), "plus,minus,dots");
        assert_eq!(MailboxRule::parse(&all.to_string()).unwrap(), all);
        assert_eq!(MailboxRule::default().to_string(), "plus");
        for bad in ["", " , ", "plus,gmail", "dot", "plus;dots"] {
            assert!(MailboxRule::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn plus_drops_a_plus_tag_only() {
        assert_eq!(key_by("plus", "Carol+x@corp.test"), "carol@corp.test");
        assert_eq!(key_by("plus", "carol-x@corp.test"), "carol-x@corp.test");
        assert_eq!(key_by("plus", "c.arol@corp.test"), "c.arol@corp.test");
    }

    #[test]
    fn minus_drops_a_minus_tag() {
        assert_eq!(key_by("minus", "carol-x@corp.test"), "carol@corp.test");
        assert_eq!(key_by("minus", "Carol-x-y@corp.test"), "carol@corp.test");
        // Without `plus`, a `+tag` is part of the mailbox's name.
        assert_eq!(key_by("minus", "carol+x@corp.test"), "carol+x@corp.test");
        // Both: the first delimiter of either kind ends the name.
        assert_eq!(
            key_by("plus,minus", "carol-x+y@corp.test"),
            "carol@corp.test"
        );
        assert_eq!(
            key_by("plus,minus", "carol+x-y@corp.test"),
            "carol@corp.test"
        );
        // A leading `-` is no delimiter, as a leading `+` is not.
        assert_eq!(key_by("minus", "-x@corp.test"), "-x@corp.test");
    }

    #[test]
    fn dots_ignores_dots_in_the_name_but_not_the_domain() {
        assert_eq!(key_by("dots", "c.arol@corp.test"), "carol@corp.test");
        assert_eq!(key_by("dots", "C.a.R.o.L@corp.test"), "carol@corp.test");
        assert_eq!(key_by("dots", "carol@corp.test"), "carol@corp.test");
        // Without `plus`, the tag stays (dots in it go).
        assert_eq!(key_by("dots", "carol+x.y@corp.test"), "carol+xy@corp.test");
        assert_eq!(
            key_by("plus,dots", "c.arol+x.y@corp.test"),
            "carol@corp.test"
        );
        assert_eq!(
            key_by("plus,dots", "\"c.arol\"@corp.test"),
            "carol@corp.test"
        );
        // A name of dots alone is still a name.
        assert_eq!(key_by("dots", "\"..\"@corp.test"), "..@corp.test");
    }

    #[test]
    fn every_rule_folds_case_and_keeps_the_domain() {
        for rule in ["plus", "minus", "dots", "plus,minus,dots"] {
            assert_eq!(key_by(rule, "CAROL@Corp.Test"), "carol@corp.test", "{rule}");
            assert_ne!(
                key_by(rule, "carol@corp.test"),
                key_by(rule, "carol@c.orp.test"),
                "{rule}"
            );
        }
    }

    #[test]
    fn the_plain_local_part_is_printable_ascii_letters_digits_and_four_marks() {
        for plain in [
            "carol@corp.test",
            "Carol.Smith@corp.test",
            "carol_s@corp.test",
            "carol-x@corp.test",
            "carol+x@corp.test",
            "C4rol@corp.test",
            // The rule is about the local part; the domain is canonical punycode anyway.
            "carol@b\u{fc}cher.test",
        ] {
            let address = EmailAddress::parse(plain).unwrap();
            assert!(address.has_plain_local_part(), "{plain:?}");
        }
        for look_alike in [
            "carol%corp.test@corp.test",
            "carol!corp.test@corp.test",
            "\"carol\"@corp.test",
            "\"carol@corp.test\"@corp.test",
            "carol\u{200b}@corp.test",
            "\u{441}arol@corp.test",
            "car\u{f6}l@corp.test",
            "carol\u{ad}@corp.test",
            "carol'@corp.test",
            "carol=x@corp.test",
            "carol~@corp.test",
        ] {
            let Ok(address) = EmailAddress::parse(look_alike) else {
                // What does not parse never reaches admission at all.
                continue;
            };
            assert!(!address.has_plain_local_part(), "{look_alike:?}");
        }
    }

    #[test]
    fn the_look_alikes_of_the_finding_parse_so_the_plain_rule_is_what_stops_them() {
        for input in [
            "carol%corp.test@corp.test",
            "carol\u{200b}@corp.test",
            "\u{441}arol@corp.test",
        ] {
            let address = EmailAddress::parse(input).unwrap();
            assert!(!address.has_plain_local_part(), "{input:?}");
            assert_ne!(
                key_by("plus,minus,dots", input),
                "carol@corp.test",
                "{input:?}"
            );
        }
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
        fn every_rule_maps_tagged_dotted_spellings_of_a_plain_name_together(
            name in "[a-z0-9_]{2,12}",
            dots in proptest::collection::vec(1usize..12, 0..3),
            tag in "[a-z0-9_]{0,8}",
            upper in any::<bool>(),
        ) {
            let mut dotted = name.clone();
            for at in dots {
                // Dots inside the name only, never two in a row: the address must parse.
                let at = 1 + at % (dotted.len() - 1);
                if !dotted[..at].ends_with('.') && !dotted[at..].starts_with('.') {
                    dotted.insert(at, '.');
                }
            }
            let dotted = if upper { dotted.to_uppercase() } else { dotted };
            let all = MailboxRule::parse("plus,minus,dots").unwrap();
            let plain = EmailAddress::parse(&format!("{name}@corp.test")).unwrap();
            for delimiter in ['+', '-'] {
                let spelling = EmailAddress::parse(&format!("{dotted}{delimiter}{tag}@corp.test")).unwrap();
                prop_assert_eq!(spelling.mailbox_key_by(all), plain.mailbox_key_by(all));
                prop_assert!(spelling.has_plain_local_part());
            }
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
