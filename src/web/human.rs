//! What a person reads instead of what the database holds: audit events as short labels,
//! User-Agent strings as "Chrome 124 on macOS", times as "3 minutes ago".
//!
//! The raw values stay where machines and careful readers look (the CSV, `data-event`,
//! `title` and `datetime` attributes); these are only the words on the page.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::audit::rows::AuditEvent;
use crate::domain::user_agent::describe_user_agent;

/// The label of an event, as a sentence fragment a team member understands without
/// knowing the contract's names.
pub fn event_label(event: AuditEvent) -> &'static str {
    match event {
        AuditEvent::LinkRequested => "Sign-in link requested",
        AuditEvent::LinkSent => "Sign-in link sent",
        AuditEvent::LinkSendFailed => "Sign-in mail could not be sent",
        AuditEvent::LoginDenied => "Sign-in refused (address not allowed)",
        AuditEvent::LoginThrottled => "Too many attempts from one address",
        AuditEvent::LinkPrefetched => "Link opened by a mail scanner",
        AuditEvent::SignedIn => "Signed in",
        AuditEvent::LinkInvalid => "Invalid sign-in link",
        AuditEvent::LinkExpired => "Expired sign-in link",
        AuditEvent::LinkReused => "Sign-in link used again",
        AuditEvent::LinkWrongBrowser => "Link opened in another browser",
        AuditEvent::CodeFailed => "Wrong code",
        AuditEvent::ApprovalMismatch => "Wrong approval number",
        AuditEvent::LinkCancelled => "Request cancelled (\u{201c}Not you?\u{201d})",
        AuditEvent::SignedOut => "Signed out",
        AuditEvent::SessionExpired => "Session expired",
        AuditEvent::SessionRevoked => "Session revoked",
        AuditEvent::MemberAdded => "Member added",
        AuditEvent::MemberRoleChanged => "Role changed",
        AuditEvent::MemberDeactivated => "Member deactivated",
        AuditEvent::CodeLocked => "Codes locked for 24 hours",
        AuditEvent::ApprovalLocked => "Approvals locked for 24 hours",
        AuditEvent::AppAdded => "App added",
        AuditEvent::AppChanged => "App changed",
        AuditEvent::AppRemoved => "App removed",
        AuditEvent::AppOpened => "Opened an app",
        AuditEvent::AppDenied => "Refused an app",
        AuditEvent::PasskeyAdded => "Passkey added",
        AuditEvent::PasskeyRemoved => "Passkey removed",
        AuditEvent::PasskeyFailed => "Passkey sign-in failed",
        AuditEvent::PasskeysReset => "Passkeys reset from the command line",
        AuditEvent::AuditChainBroken => "Audit chain found cut or rewritten",
        AuditEvent::GroupAdded => "Group added",
        AuditEvent::GroupRemoved => "Group removed",
        AuditEvent::GroupMemberAdded => "Added to a group",
        AuditEvent::GroupMemberRemoved => "Removed from a group",
        AuditEvent::MemberRenamed => "Name changed",
        AuditEvent::AppSecretRotated => "App secret replaced",
        AuditEvent::SigningKeyRotated => "Signing key rotated",
        AuditEvent::OidcRefused => "App token request refused",
        AuditEvent::OidcCodeReused => "App sign-in code replayed",
        AuditEvent::OidcLogoutSent => "App told of a sign-out",
        AuditEvent::OidcLogoutFailed => "App not reached for a sign-out",
    }
}

/// The label of a stored event name. A name this build does not know (written by a newer
/// version sharing the database) is shown as it is rather than hidden.
pub fn event_name_label(name: &str) -> Cow<'static, str> {
    match AuditEvent::parse(name) {
        Some(event) => Cow::Borrowed(event_label(event)),
        None => Cow::Owned(name.to_string()),
    }
}

/// An event for a `<select>`: the contract's name as the value, the label as the text.
#[derive(Debug, Clone, Serialize)]
pub struct EventOption {
    pub name: &'static str,
    pub label: &'static str,
}

pub fn event_options() -> Vec<EventOption> {
    AuditEvent::ALL
        .iter()
        .map(|event| EventOption {
            name: event.as_str(),
            label: event_label(*event),
        })
        .collect()
}

/// [`describe_user_agent`]; "Unknown browser" for a string it cannot name; nothing at all where
/// no User-Agent was recorded: an audit row that Latchkey wrote itself (expiry, a chain check,
/// the command line) involved no browser, and "Unknown browser" there would suggest one.
pub fn browser_or_unknown(user_agent: Option<&str>) -> String {
    match user_agent {
        None => String::new(),
        Some(agent) => describe_user_agent(agent).unwrap_or_else(|| "Unknown browser".to_string()),
    }
}

/// How long ago `at` was, in the words a person would use: "just now", "3 minutes ago",
/// "yesterday", "5 days ago", "2 months ago". A time in the future (clocks of two instances
/// a second apart) reads as "just now".
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match seconds {
        i64::MIN..=44 => "just now".to_string(),
        45..=89 => "1 minute ago".to_string(),
        90..=3_569 => plural((seconds + 30) / 60, "minute"),
        3_570..=86_399 => plural((seconds + 1_800) / 3_600, "hour"),
        86_400..=172_799 => "yesterday".to_string(),
        172_800..=2_591_999 => plural(seconds / 86_400, "day"),
        2_592_000..=31_535_999 => plural(seconds / 2_592_000, "month"),
        _ => plural(seconds / 31_536_000, "year"),
    }
}

/// A moment as the pages show it: relative words, the exact UTC time for the title (or
/// beside it), and the machine-readable value for `<time datetime>`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Moment {
    pub ago: String,
    pub exact: String,
    pub iso: String,
}

impl Moment {
    pub fn new(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            ago: ago(at, now),
            exact: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            iso: at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// `{{ user_agent | browser }}` in page templates (the sessions page): the description, or
/// "Unknown browser". A session was always opened by some client, so one that sent no
/// User-Agent is an unknown browser too, not a blank. Its output is escaped like any other value.
pub fn browser_filter(
    value: &tera::Value,
    _: &HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(browser_or_unknown(Some(
        value.as_str().unwrap_or_default(),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone as _};

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const FIREFOX_WINDOWS: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.224 Safari/537.36";

    #[test]
    fn browsers_are_named_as_people_say_them() {
        assert_eq!(
            describe_user_agent(CHROME_MAC).as_deref(),
            Some("Chrome 124 on macOS")
        );
        assert_eq!(
            describe_user_agent(FIREFOX_WINDOWS).as_deref(),
            Some("Firefox 126 on Windows 10")
        );
        assert_eq!(
            describe_user_agent(SAFARI_IPHONE).as_deref(),
            Some("Safari 17 on iPhone")
        );
        assert_eq!(
            describe_user_agent(CHROME_LINUX).as_deref(),
            Some("Chrome 120 on Linux")
        );
        assert_eq!(
            describe_user_agent(&CHROME_LINUX.replace("Chrome/", "HeadlessChrome/")).as_deref(),
            Some("Headless Chrome 120 on Linux")
        );
    }

    #[test]
    fn strings_that_name_no_browser_are_not_guessed_at() {
        for agent in [
            "",
            "Seeder/1.0",
            "<script>alert(1)</script>",
            "PhoneBrowser/9.0",
        ] {
            assert_eq!(describe_user_agent(agent), None, "{agent}");
        }
        assert_eq!(browser_or_unknown(Some("Seeder/1.0")), "Unknown browser");
        assert_eq!(browser_or_unknown(Some("")), "Unknown browser");
        // No User-Agent recorded: a row Latchkey wrote itself, where no browser was involved.
        assert_eq!(browser_or_unknown(None), "");
        // A session always had a client; one that sent nothing is still an unknown browser.
        let filtered = |value| browser_filter(&value, &HashMap::new()).unwrap();
        assert_eq!(filtered(tera::Value::Null), "Unknown browser");
        assert_eq!(
            filtered(tera::Value::from(CHROME_MAC)),
            "Chrome 124 on macOS"
        );
    }

    #[test]
    fn every_event_has_a_label_of_its_own() {
        let labels: std::collections::HashSet<_> =
            AuditEvent::ALL.iter().map(|e| event_label(*e)).collect();
        assert_eq!(labels.len(), AuditEvent::ALL.len());
        assert_eq!(event_name_label("signed_in"), "Signed in");
        assert_eq!(
            event_name_label("link_prefetched"),
            "Link opened by a mail scanner"
        );
        assert_eq!(event_name_label("from_the_future"), "from_the_future");
    }

    #[test]
    fn times_read_as_a_person_says_them() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let cases = [
            (Duration::seconds(-5), "just now"),
            (Duration::seconds(10), "just now"),
            (Duration::seconds(60), "1 minute ago"),
            (Duration::minutes(3), "3 minutes ago"),
            (Duration::minutes(59), "59 minutes ago"),
            (Duration::minutes(60), "1 hour ago"),
            (Duration::hours(5), "5 hours ago"),
            (Duration::hours(30), "yesterday"),
            (Duration::days(5), "5 days ago"),
            (Duration::days(45), "1 month ago"),
            (Duration::days(100), "3 months ago"),
            (Duration::days(800), "2 years ago"),
        ];
        for (back, words) in cases {
            assert_eq!(ago(now - back, now), words, "{back}");
        }
    }

    #[test]
    fn a_moment_keeps_the_exact_time() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let moment = Moment::new(now - Duration::minutes(3), now);
        assert_eq!(moment.ago, "3 minutes ago");
        assert_eq!(moment.exact, "2026-12-02 11:57:00 UTC");
        assert_eq!(moment.iso, "2026-12-02T11:57:00Z");
    }
}
