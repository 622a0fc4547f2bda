//! The mails Latchkey writes, as typed render functions over tera templates.
//!
//! The templates are compiled into the binary (`include_str!`), so `latchkey` runs from any
//! directory. Names ending in `.html` are autoescaped: a user agent is attacker-chosen text.
//! The HTML parts describe the browser as people say it ("Chrome 124 on macOS"); the text
//! parts keep the string the browser sent.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use tera::{Context, Tera};

use super::{MailAudit, MailError, OutgoingMail};
use crate::domain::client_ip::ClientIp;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::RequestId;
use crate::domain::user_agent::describe_user_agent;
use crate::settings::OrgName;

/// The subjects with the default `LATCHKEY_ORG_NAME` (`Latchkey`); the `*_subject`
/// functions give them for any name.
pub const SIGN_IN_SUBJECT: &str = "Your Latchkey sign-in link";
pub const NEW_SIGN_IN_SUBJECT: &str = "New sign-in to Latchkey";
pub const PASSKEY_ADDED_SUBJECT: &str = "A passkey was added to your Latchkey account";

pub fn sign_in_subject(org: &OrgName) -> String {
    format!("Your {org} sign-in link")
}

pub fn new_sign_in_subject(org: &OrgName) -> String {
    format!("New sign-in to {org}")
}

pub fn passkey_added_subject(org: &OrgName) -> String {
    format!("A passkey was added to your {org} account")
}

/// Every mail's context starts with the organisation's name (escaped like any value).
fn org_context(org: &OrgName) -> Context {
    let mut context = Context::new();
    context.insert("org", org.as_str());
    context
}

const TEMPLATES: [(&str, &str); 13] = [
    ("alert.txt", include_str!("../../templates/email/alert.txt")),
    (
        "alert.html",
        include_str!("../../templates/email/alert.html"),
    ),
    ("base.html", include_str!("../../templates/email/base.html")),
    (
        "sign_in.txt",
        include_str!("../../templates/email/sign_in.txt"),
    ),
    (
        "sign_in.html",
        include_str!("../../templates/email/sign_in.html"),
    ),
    (
        "new_sign_in.txt",
        include_str!("../../templates/email/new_sign_in.txt"),
    ),
    (
        "new_sign_in.html",
        include_str!("../../templates/email/new_sign_in.html"),
    ),
    (
        "cancelled.txt",
        include_str!("../../templates/email/cancelled.txt"),
    ),
    (
        "cancelled.html",
        include_str!("../../templates/email/cancelled.html"),
    ),
    (
        "passkey_added.txt",
        include_str!("../../templates/email/passkey_added.txt"),
    ),
    (
        "passkey_added.html",
        include_str!("../../templates/email/passkey_added.html"),
    ),
    (
        "chain_broken.txt",
        include_str!("../../templates/email/chain_broken.txt"),
    ),
    (
        "chain_broken.html",
        include_str!("../../templates/email/chain_broken.html"),
    ),
];

/// What the sign-in mail says; `request_id` ties `link_sent`/`link_send_failed` to the request.
#[derive(Clone)]
pub struct SignInMail {
    pub link: String,
    pub cancel_link: String,
    pub code: String,
    pub expires_at: DateTime<Utc>,
    pub ttl_minutes: u64,
    pub requested_at: DateTime<Utc>,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
    pub request_id: RequestId,
    /// The app the sign-in continues to ("to continue to Wiki").
    pub app_name: Option<String>,
}

/// A sign-in from a browser not seen before for this member.
#[derive(Debug, Clone)]
pub struct NewSignInMail {
    pub signed_in_at: DateTime<Utc>,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
}

/// Tells an admin that `email` cancelled a request; where it came from is the original request's.
#[derive(Debug, Clone)]
pub struct CancelledMail {
    pub email: EmailAddress,
    pub requested_at: DateTime<Utc>,
    pub cancelled_at: DateTime<Utc>,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
}

/// A warning about one sign-in request (a wrong approval number, a lock), sent to the
/// member and to each admin.
#[derive(Debug, Clone)]
pub struct AlertMail {
    pub about: Alarm,
    pub requested_at: DateTime<Utc>,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
}

/// What an alert warns of. The sign-in steps decide that it happened; the words are here.
#[derive(Debug, Clone)]
pub enum Alarm {
    /// `failures` wrong codes for `email` within 24 hours: codes are refused for a while.
    CodesLocked { email: EmailAddress, failures: i64 },
    /// A wrong approval number cancelled a request for `email`; `locked_after` is the number
    /// of wrong numbers that has just locked approval, if this one did.
    ApprovalMismatch {
        email: EmailAddress,
        locked_after: Option<i64>,
    },
}

impl Alarm {
    fn subject(&self) -> &'static str {
        match self {
            Alarm::CodesLocked { .. } => "Sign-in codes locked",
            Alarm::ApprovalMismatch { .. } => "Sign-in approval failed",
        }
    }

    /// Plain sentences, one paragraph each.
    fn lines(&self) -> Vec<String> {
        match self {
            Alarm::CodesLocked { email, failures } => vec![format!(
                "Someone typed {failures} wrong sign-in codes for {email} within 24 hours, so codes are refused for this account for the rest of that time. Sign-in links still work."
            )],
            Alarm::ApprovalMismatch {
                email,
                locked_after,
            } => {
                let mut lines = vec![format!(
                    "A sign-in request for {email} was approved from another device with the wrong number, so it was cancelled. If you were signing in, ask for a new link; if not, someone else asked for it."
                )];
                if let Some(mismatches) = locked_after {
                    lines.push(format!(
                        "That was the {mismatches}rd wrong number within 24 hours: approving from another device is refused for this account for the rest of that time. The link and the code still work in the browser that asked."
                    ));
                }
                lines
            }
        }
    }
}

pub fn alert_mail(
    org: &OrgName,
    to: &EmailAddress,
    mail: &AlertMail,
) -> Result<OutgoingMail, MailError> {
    let subject = mail.about.subject();
    let mut context = org_context(org);
    context.insert("subject", subject);
    context.insert("lines", &mail.about.lines());
    context.insert("requested_at", &when(mail.requested_at));
    insert_client(&mut context, mail.ip, mail.user_agent.as_deref());
    Ok(OutgoingMail {
        to: to.clone(),
        subject: subject.to_string(),
        text: render("alert.txt", &context)?,
        html: render("alert.html", &context)?,
        audit: None,
    })
}

pub fn sign_in_mail(
    org: &OrgName,
    to: &EmailAddress,
    mail: &SignInMail,
) -> Result<OutgoingMail, MailError> {
    let mut context = org_context(org);
    context.insert("email", to.as_str());
    context.insert("link", &mail.link);
    context.insert("cancel_link", &mail.cancel_link);
    context.insert("app_name", &mail.app_name);
    context.insert("code", &mail.code);
    context.insert(
        "expires_at",
        &mail.expires_at.format("%H:%M UTC").to_string(),
    );
    context.insert("expires_in", &in_minutes(mail.ttl_minutes));
    context.insert("requested_at", &when(mail.requested_at));
    insert_client(&mut context, mail.ip, mail.user_agent.as_deref());
    Ok(OutgoingMail {
        to: to.clone(),
        subject: sign_in_subject(org),
        text: render("sign_in.txt", &context)?,
        html: render("sign_in.html", &context)?,
        audit: Some(MailAudit {
            request_id: mail.request_id,
            email: to.as_str().into(),
        }),
    })
}

pub fn new_sign_in_mail(
    org: &OrgName,
    to: &EmailAddress,
    mail: &NewSignInMail,
) -> Result<OutgoingMail, MailError> {
    let mut context = org_context(org);
    context.insert("email", to.as_str());
    context.insert("signed_in_at", &when(mail.signed_in_at));
    insert_client(&mut context, mail.ip, mail.user_agent.as_deref());
    Ok(OutgoingMail {
        to: to.clone(),
        subject: new_sign_in_subject(org),
        text: render("new_sign_in.txt", &context)?,
        html: render("new_sign_in.html", &context)?,
        audit: None,
    })
}

/// A passkey was added to the member's account (sent to the member).
#[derive(Debug, Clone)]
pub struct PasskeyAddedMail {
    pub name: String,
    pub added_at: DateTime<Utc>,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
}

/// The audit chain no longer extends a head this instance signed or saw signed: to each
/// admin.
#[derive(Debug, Clone)]
pub struct ChainBrokenMail {
    pub seq: i64,
    pub head: String,
    pub signed_at: DateTime<Utc>,
}

pub const CHAIN_BROKEN_SUBJECT: &str = "Latchkey's login audit was cut or rewritten";

pub fn chain_broken_mail(
    org: &OrgName,
    to: &EmailAddress,
    mail: &ChainBrokenMail,
) -> Result<OutgoingMail, MailError> {
    let mut context = org_context(org);
    context.insert("seq", &mail.seq);
    context.insert("head", &mail.head);
    context.insert("signed_at", &when(mail.signed_at));
    Ok(OutgoingMail {
        to: to.clone(),
        subject: CHAIN_BROKEN_SUBJECT.into(),
        text: render("chain_broken.txt", &context)?,
        html: render("chain_broken.html", &context)?,
        audit: None,
    })
}

pub fn passkey_added_mail(
    org: &OrgName,
    to: &EmailAddress,
    mail: &PasskeyAddedMail,
) -> Result<OutgoingMail, MailError> {
    let mut context = org_context(org);
    context.insert("email", to.as_str());
    context.insert("name", &mail.name);
    context.insert("added_at", &when(mail.added_at));
    insert_client(&mut context, mail.ip, mail.user_agent.as_deref());
    Ok(OutgoingMail {
        to: to.clone(),
        subject: passkey_added_subject(org),
        text: render("passkey_added.txt", &context)?,
        html: render("passkey_added.html", &context)?,
        audit: None,
    })
}

/// One admin's copy; the caller sends one per admin.
pub fn cancelled_mail(
    org: &OrgName,
    admin: &EmailAddress,
    mail: &CancelledMail,
) -> Result<OutgoingMail, MailError> {
    let mut context = org_context(org);
    context.insert("email", mail.email.as_str());
    context.insert("requested_at", &when(mail.requested_at));
    context.insert("cancelled_at", &when(mail.cancelled_at));
    insert_client(&mut context, mail.ip, mail.user_agent.as_deref());
    Ok(OutgoingMail {
        to: admin.clone(),
        subject: format!("Sign-in request for {} cancelled", mail.email.as_str()),
        text: render("cancelled.txt", &context)?,
        html: render("cancelled.html", &context)?,
        audit: None,
    })
}

fn insert_client(context: &mut Context, ip: Option<ClientIp>, user_agent: Option<&str>) {
    context.insert("ip", &ip.map_or("unknown".into(), |ip| ip.to_string()));
    context.insert("user_agent", user_agent.unwrap_or("unknown browser"));
    context.insert("browser", &describe_browser(user_agent));
}

/// The browser for the HTML parts. A string that names no browser is quoted as sent (and
/// escaped): it may be the only clue to who asked.
fn describe_browser(user_agent: Option<&str>) -> String {
    match user_agent {
        None => "unknown browser".into(),
        Some(agent) => describe_user_agent(agent).unwrap_or_else(|| {
            format!("unknown browser (it calls itself \u{201c}{agent}\u{201d})")
        }),
    }
}

/// `latchkey mail test`: a short plain message that says where it came from.
pub fn test_mail(to: &EmailAddress, org: &OrgName) -> Result<OutgoingMail, MailError> {
    let text = format!(
        "This is a test message from {org}'s sign-in service (`latchkey mail test`).\n\
         If you can read it, mail to {to} works. Nothing else needs doing.\n\n-- {org}\n"
    );
    let html = format!(
        "<p>{}</p>",
        escape_html(&text)
            .replace("\n\n", "</p><p>")
            .replace('\n', "<br>")
    );
    Ok(OutgoingMail {
        to: to.clone(),
        subject: format!("Test message from {org}"),
        text,
        html,
        audit: None,
    })
}

/// Tera's HTML escaping also writes `/` as `&#x2F;`, which turned every `href` into
/// `http:&#x2F;&#x2F;…`: valid HTML, but not what link checkers, mail scanners' rewriters and
/// some clients expect, and not what a person sees when copying the link. Text and
/// double-quoted attributes (the only places values go in these templates) need only these
/// five escaped. The links themselves are built from `LATCHKEY_PUBLIC_URL` and a token of
/// base64url characters, so no value can start a `javascript:` URL.
fn escape_html(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn in_minutes(minutes: u64) -> String {
    match minutes {
        1 => "in 1 minute".into(),
        n => format!("in {n} minutes"),
    }
}

/// Compiled once; a broken template is a build mistake that the unit tests catch, so it is
/// reported per mail rather than stopping start-up.
fn templates() -> Result<&'static Tera, MailError> {
    static TERA: OnceLock<Result<Tera, String>> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![".html"]);
        tera.set_escape_fn(escape_html);
        tera.add_raw_templates(TEMPLATES)
            .map(|()| tera)
            .map_err(|e| crate::logging::error_chain(&e))
    })
    .as_ref()
    .map_err(|message| MailError::Templates(message.clone()))
}

fn render(template: &'static str, context: &Context) -> Result<String, MailError> {
    templates()?
        .render(template, context)
        .map_err(|source| MailError::Render { template, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn address() -> EmailAddress {
        EmailAddress::parse("ann@example.org").unwrap()
    }

    fn sign_in(user_agent: &str) -> SignInMail {
        let requested_at = Utc.with_ymd_and_hms(2026, 11, 25, 13, 55, 0).unwrap();
        SignInMail {
            link: "https://login.example.org/auth/verify?token=abc.def".into(),
            cancel_link: "https://login.example.org/auth/cancel?token=abc.def".into(),
            code: "042917".into(),
            expires_at: requested_at + chrono::Duration::minutes(10),
            ttl_minutes: 10,
            requested_at,
            ip: Some("192.0.2.7".parse().unwrap()),
            user_agent: Some(user_agent.into()),
            request_id: RequestId::new(7),
            app_name: None,
        }
    }

    #[test]
    fn sign_in_mail_carries_link_code_expiry_origin_and_cancel_link() {
        let mail = sign_in_mail(&OrgName::default(), &address(), &sign_in("Firefox/140")).unwrap();
        assert_eq!(mail.subject, SIGN_IN_SUBJECT);
        for body in [&mail.text, &mail.html] {
            assert!(body.contains("verify?token=abc.def"), "{body}");
            assert!(body.contains("042917"), "{body}");
            assert!(body.contains("14:05 UTC (in 10 minutes)"), "{body}");
            assert!(body.contains("2026-11-25 13:55 UTC"), "{body}");
            assert!(body.contains("192.0.2.7"), "{body}");
            assert!(body.contains("Firefox"), "{body}");
            assert!(body.contains("Not you?"), "{body}");
        }
        assert!(mail
            .text
            .contains("https://login.example.org/auth/cancel?token=abc.def"));
        assert_eq!(mail.audit.unwrap().request_id, RequestId::new(7));
    }

    #[test]
    fn html_escapes_the_user_agent_and_text_keeps_it() {
        let mail = sign_in_mail(
            &OrgName::default(),
            &address(),
            &sign_in("<script>alert(1)</script>"),
        )
        .unwrap();
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&lt;script&gt;"), "{}", mail.html);
        assert!(mail.text.contains("<script>alert(1)</script>"));
    }

    #[test]
    fn other_mails_render() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let mail = new_sign_in_mail(
            &OrgName::default(),
            &address(),
            &NewSignInMail {
                signed_in_at: at,
                ip: None,
                user_agent: None,
            },
        )
        .unwrap();
        assert_eq!(mail.subject, NEW_SIGN_IN_SUBJECT);
        assert!(mail.text.contains("administrator"));
        assert!(mail.text.contains("unknown browser"));
        assert!(mail.audit.is_none());

        let admin = EmailAddress::parse("boss@example.org").unwrap();
        let mail = cancelled_mail(
            &OrgName::default(),
            &admin,
            &CancelledMail {
                email: address(),
                requested_at: at,
                cancelled_at: at,
                ip: Some("198.51.100.1".parse().unwrap()),
                user_agent: Some("curl/8".into()),
            },
        )
        .unwrap();
        assert_eq!(mail.to, admin);
        assert!(mail
            .text
            .contains("A sign-in request for ann@example.org was cancelled by the recipient"));
        assert!(mail.html.contains("198.51.100.1"));

        let mail = passkey_added_mail(
            &OrgName::default(),
            &address(),
            &PasskeyAddedMail {
                name: "<b>Laptop</b>".into(),
                added_at: at,
                ip: Some("198.51.100.2".parse().unwrap()),
                user_agent: None,
            },
        )
        .unwrap();
        assert_eq!(mail.subject, PASSKEY_ADDED_SUBJECT);
        assert!(mail.text.contains("\"<b>Laptop</b>\""));
        assert!(mail.html.contains("&lt;b&gt;Laptop"));
        assert!(mail.text.contains("198.51.100.2"));
    }
}
