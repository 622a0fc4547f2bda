//! The sign-in steps without HTTP: the `SignIn` service on a migrated test database, with
//! the real mailer sending to the test SMTP server. Each test takes steps as a route would
//! (a browser is an `Asker`), passing the time in, and checks the outcome, the audit rows
//! and the mail.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use secrecy::ExposeSecret as _;

use latchkey::audit::rows::{AuditEvent, AuditRow};
use latchkey::db::Db;
use latchkey::domain::approval_number::ApprovalNumber;
use latchkey::domain::break_glass_reason::BreakGlassReason;
use latchkey::domain::client_info::ClientInfo;
use latchkey::domain::code::SignInCode;
use latchkey::domain::digests::{BindingDigest, DeviceDigest};
use latchkey::domain::email_address::EmailAddress;
use latchkey::domain::ids::MemberId;
use latchkey::domain::next_path::NextPath;
use latchkey::keys::Keys;
use latchkey::mail::Mailer;
use latchkey::models::member;
use latchkey::models::sign_in_request::{self, CompletedBy, SignInRequest};
use latchkey::settings::Settings;
use latchkey::signin::{
    self, ApprovalOutcome, Asker, BreakGlass, CancelOutcome, CodeOutcome, LinkAsk, LinkRequest,
    LinkView, Redemption, Refusal, SignIn, WaitOutcome,
};

use crate::helpers::{urldecode, TestDatabase};
use crate::smtp_server::{self, ReceivedMail, SmtpServer};

/// The service and what it works on, as the server builds them.
struct Steps {
    database: TestDatabase,
    smtp: SmtpServer,
    settings: Settings,
    keys: Keys,
    signin: SignIn,
}

async fn steps() -> Steps {
    let database = TestDatabase::migrated();
    let smtp = smtp_server::start().await;
    let environment = BTreeMap::from([
        ("DATABASE_URL", database.url.expose_secret().to_string()),
        (
            "LATCHKEY_SECRET_KEY",
            hex::encode(latchkey::crypto::sha256(database.name.as_bytes())),
        ),
        ("LATCHKEY_EMAIL", smtp.url()),
        ("LATCHKEY_PUBLIC_URL", "https://latchkey.test".to_string()),
        (
            "LATCHKEY_EMAIL_FROM",
            "Latchkey <login@latchkey.test>".to_string(),
        ),
        ("LATCHKEY_EMAIL_RATE", "1000/1m".to_string()),
    ]);
    let settings =
        Settings::from_lookup(|name| environment.get(name).cloned()).expect("test settings");
    let keys = Keys::derive(settings.secret_key.as_ref().expect("a secret key"));
    let db = Db::connect_lazy(&database.url, 2);
    let mailer = Mailer::start(
        &settings.email,
        settings.email_from.clone(),
        settings.org_name.clone(),
        db.clone(),
    )
    .expect("starting the mailer");
    let signin = SignIn::new(db, settings.clone(), keys.token.clone(), mailer);
    Steps {
        database,
        smtp,
        settings,
        keys,
        signin,
    }
}

/// A browser as the steps see it: the binding it was given when it asked, its device id.
#[derive(Clone)]
struct Browser {
    binding: BindingDigest,
    device: DeviceDigest,
    client: ClientInfo,
}

impl Browser {
    fn new(name: &str) -> Self {
        Self {
            binding: BindingDigest::sha256(format!("binding of {name}").as_bytes()),
            device: DeviceDigest::sha256(format!("device of {name}").as_bytes()),
            client: ClientInfo::new(None, Some(name)),
        }
    }

    fn asker(&self) -> Asker {
        Asker {
            bindings: vec![self.binding],
            device: self.device,
            client: self.client.clone(),
        }
    }
}

fn address(text: &str) -> EmailAddress {
    EmailAddress::parse(text).unwrap()
}

impl Steps {
    fn conn(&self) -> PgConnection {
        self.database.connect()
    }

    fn add_member(&self, email: &str, role: &str) -> MemberId {
        let role = latchkey::domain::role::Role::parse(role).unwrap();
        let (member, _) =
            member::add_or_reactivate(&mut self.conn(), &address(email), role, "test").unwrap();
        member.id
    }

    async fn ask(&self, browser: &Browser, email: &str, now: DateTime<Utc>) -> LinkRequest {
        let ask = LinkAsk {
            email: address(email),
            binding: browser.binding,
            next: NextPath::parse(Some("/apps")),
            return_url: None,
            client: browser.client.clone(),
        };
        self.signin.request_link(ask, now).await.unwrap()
    }

    /// The newest request made for `email` (decoys included).
    fn request_for(&self, email: &str) -> SignInRequest {
        use latchkey::schema::sign_in_requests::dsl::*;
        sign_in_requests
            .filter(requested_email.eq(email))
            .order(id.desc())
            .select(SignInRequest::as_select())
            .first(&mut self.conn())
            .unwrap()
    }

    /// The rows the steps wrote, oldest first: without the mailer's `link_sent` and
    /// `link_send_failed`, which its worker writes whenever a delivery ends.
    fn audit(&self) -> Vec<AuditRow> {
        use latchkey::schema::login_audit::dsl::*;
        let delivery = [AuditEvent::LinkSent, AuditEvent::LinkSendFailed].map(name_of);
        login_audit
            .order(id.asc())
            .select(AuditRow::as_select())
            .load(&mut self.conn())
            .unwrap()
            .into_iter()
            .filter(|row| !delivery.contains(&row.event))
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.audit().into_iter().map(|row| row.event).collect()
    }

    /// The `n`th mail (1-based), once it has arrived.
    async fn mail(&self, n: usize) -> ReceivedMail {
        let mails = self.smtp.wait_for(n, Duration::from_secs(10)).await;
        assert!(mails.len() >= n, "expected {n} mails, got {}", mails.len());
        mails[n - 1].clone()
    }

    /// The token and code of the `n`th mail, a sign-in mail.
    async fn secrets(&self, n: usize) -> (String, SignInCode) {
        let mail = self.mail(n).await;
        let link = mail.extract_link("https://latchkey.test/auth/verify?token=");
        let token = urldecode(link.split("token=").nth(1).unwrap());
        (token, SignInCode::parse(&mail.extract_code()).unwrap())
    }
}

fn name_of(event: AuditEvent) -> String {
    event.as_str().to_string()
}

#[actix_web::test]
async fn asking_for_a_members_link_makes_a_bound_request_audits_it_and_mails_the_link() {
    let steps = steps().await;
    let member_id = steps.add_member("ada@example.org", "member");
    let browser = Browser::new("laptop");
    let now = Utc::now();

    let outcome = steps.ask(&browser, "ada@example.org", now).await;

    assert_eq!(outcome, LinkRequest::Created);
    let request = steps.request_for("ada@example.org");
    assert_eq!(request.member_id, Some(member_id));
    assert_eq!(request.browser_digest, Some(browser.binding));
    assert_eq!(request.next_path.as_str(), "/apps");
    // PostgreSQL keeps microseconds.
    let expected = now + signin::to_chrono(steps.settings.link_ttl);
    assert!(
        (request.expires_at - expected)
            .num_microseconds()
            .unwrap()
            .abs()
            <= 1,
        "the expiry counts from the time passed in: {} vs {expected}",
        request.expires_at
    );
    let audit = steps.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.event, name_of(AuditEvent::LinkRequested));
    assert_eq!(last.email.as_deref(), Some("ada@example.org"));
    assert_eq!(last.request_id, Some(request.id));
    let mail = steps.mail(1).await;
    assert_eq!(mail.to, vec!["ada@example.org".to_string()]);
    let (token, _) = steps.secrets(1).await;
    let token_id = steps.signin.verify_token(Some(&token)).unwrap();
    assert_eq!(token_id.digest(), request.token_digest);
}

#[actix_web::test]
async fn a_stranger_gets_a_decoy_request_an_audit_row_and_no_mail() {
    let steps = steps().await;
    let browser = Browser::new("laptop");

    let outcome = steps.ask(&browser, "eve@example.org", Utc::now()).await;

    assert_eq!(outcome, LinkRequest::Decoy);
    let decoy = steps.request_for("eve@example.org");
    assert_eq!(decoy.member_id, None);
    assert_eq!(
        decoy.browser_digest,
        Some(browser.binding),
        "bound like a real one"
    );
    let audit = steps.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.event, name_of(AuditEvent::LoginDenied));
    assert_eq!(last.email.as_deref(), Some("eve@example.org"));
    // The decoy's browser waits with a number, as a member's does.
    let waiting = steps
        .signin
        .wait(browser.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(waiting, WaitOutcome::Waiting(n) if n == decoy.approval_number));
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        steps.smtp.received().is_empty(),
        "nothing is mailed to a stranger"
    );
}

#[actix_web::test]
async fn a_link_signs_in_once_and_is_refused_when_used_again() {
    let steps = steps().await;
    steps.add_member("ada@example.org", "member");
    let browser = Browser::new("laptop");
    steps.ask(&browser, "ada@example.org", Utc::now()).await;
    let (token, _) = steps.secrets(1).await;
    let token_id = steps.signin.verify_token(Some(&token));

    let view = steps
        .signin
        .show_link(token_id.clone().unwrap(), browser.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(view, LinkView::Confirm { ref email } if email.as_str() == "ada@example.org"));
    let first = steps
        .signin
        .redeem_link(token_id.clone(), browser.asker(), Utc::now())
        .await
        .unwrap();
    let Redemption::SignedIn(signed_in) = first else {
        panic!("expected a sign-in, got {first:?}");
    };
    assert_eq!(signed_in.member.email.as_str(), "ada@example.org");
    assert_eq!(signed_in.request.completed_by, Some(CompletedBy::Link));
    assert!(
        !signed_in.new_browser,
        "a member's first browser is not news"
    );
    assert_eq!(steps.events().last(), Some(&name_of(AuditEvent::SignedIn)));

    let again = steps
        .signin
        .redeem_link(token_id, browser.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(again, Redemption::Refused(Refusal::Used)));
    assert_eq!(
        steps.events().last(),
        Some(&name_of(AuditEvent::LinkReused))
    );
    let signed_in_rows = steps
        .events()
        .iter()
        .filter(|e| **e == name_of(AuditEvent::SignedIn))
        .count();
    assert_eq!(signed_in_rows, 1);
}

#[actix_web::test]
async fn a_link_redeemed_after_its_lifetime_is_refused_as_expired_and_stays_unused() {
    let steps = steps().await;
    steps.add_member("ada@example.org", "member");
    let browser = Browser::new("laptop");
    let asked_at = Utc::now();
    steps.ask(&browser, "ada@example.org", asked_at).await;
    let (token, _) = steps.secrets(1).await;
    let later =
        asked_at + signin::to_chrono(steps.settings.link_ttl) + chrono::Duration::seconds(1);

    let outcome = steps
        .signin
        .redeem_link(
            steps.signin.verify_token(Some(&token)),
            browser.asker(),
            later,
        )
        .await
        .unwrap();

    assert!(matches!(outcome, Redemption::Refused(Refusal::Expired)));
    assert_eq!(
        steps.events().last(),
        Some(&name_of(AuditEvent::LinkExpired))
    );
    assert_eq!(steps.request_for("ada@example.org").consumed_at, None);
}

#[actix_web::test]
async fn a_forged_token_is_refused_and_audited() {
    let steps = steps().await;
    let browser = Browser::new("laptop");
    assert!(steps.signin.verify_token(Some("not-a-token")).is_none());

    let outcome = steps
        .signin
        .redeem_link(None, browser.asker(), Utc::now())
        .await
        .unwrap();

    assert!(matches!(outcome, Redemption::Refused(Refusal::Invalid)));
    let audit = steps.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.event, name_of(AuditEvent::LinkInvalid));
    assert!(
        last.detail.contains("malformed or forged token"),
        "{}",
        last.detail
    );
}

#[actix_web::test]
async fn wrong_codes_count_down_and_the_right_code_signs_in() {
    let steps = steps().await;
    steps.add_member("ada@example.org", "member");
    let browser = Browser::new("laptop");
    steps.ask(&browser, "ada@example.org", Utc::now()).await;
    let (_, code) = steps.secrets(1).await;
    let wrong = SignInCode::parse(if code.as_str() == "000000" {
        "111111"
    } else {
        "000000"
    })
    .unwrap();

    let outcome = steps
        .signin
        .redeem_code(Some(wrong), browser.asker(), Utc::now())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, CodeOutcome::Wrong { email, tries_left: 4 } if email.as_str() == "ada@example.org"),
        "{outcome:?}"
    );
    let audit = steps.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.event, name_of(AuditEvent::CodeFailed));
    assert!(last.detail.contains("try 1 of 5"), "{}", last.detail);
    // Not a code at all is a wrong try too.
    let outcome = steps
        .signin
        .redeem_code(None, browser.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(outcome, CodeOutcome::Wrong { tries_left: 3, .. }));

    let outcome = steps
        .signin
        .redeem_code(Some(code), browser.asker(), Utc::now())
        .await
        .unwrap();
    let CodeOutcome::SignedIn(signed_in) = outcome else {
        panic!("expected a sign-in, got {outcome:?}");
    };
    assert_eq!(signed_in.request.completed_by, Some(CompletedBy::Code));
    assert_eq!(steps.events().last(), Some(&name_of(AuditEvent::SignedIn)));
}

#[actix_web::test]
async fn the_fifth_wrong_code_kills_the_request_and_its_link() {
    let steps = steps().await;
    steps.add_member("ada@example.org", "member");
    let browser = Browser::new("laptop");
    steps.ask(&browser, "ada@example.org", Utc::now()).await;
    let (token, code) = steps.secrets(1).await;
    let wrong = if code.as_str() == "000000" {
        "111111"
    } else {
        "000000"
    };

    let mut last = None;
    for _ in 0..5 {
        last = Some(
            steps
                .signin
                .redeem_code(SignInCode::parse(wrong).ok(), browser.asker(), Utc::now())
                .await
                .unwrap(),
        );
    }

    assert!(matches!(last, Some(CodeOutcome::Exhausted)), "{last:?}");
    let link = steps
        .signin
        .redeem_link(
            steps.signin.verify_token(Some(&token)),
            browser.asker(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(matches!(link, Redemption::Refused(Refusal::Used)));
    let code_now = steps
        .signin
        .redeem_code(Some(code), browser.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(code_now, CodeOutcome::NoRequest));
}

#[actix_web::test]
async fn approving_with_the_right_number_lets_the_waiting_browser_in() {
    let steps = steps().await;
    steps.add_member("ada@example.org", "member");
    let laptop = Browser::new("laptop");
    let phone = Browser::new("phone");
    steps.ask(&laptop, "ada@example.org", Utc::now()).await;
    let (token, _) = steps.secrets(1).await;
    let token_id = steps.signin.verify_token(Some(&token));

    let shown = steps.signin.wait(laptop.asker(), Utc::now()).await.unwrap();
    let WaitOutcome::Waiting(number) = shown else {
        panic!("expected a number, got {shown:?}");
    };
    let view = steps
        .signin
        .show_link(token_id.clone().unwrap(), phone.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(view, LinkView::Approve { .. }), "{view:?}");
    assert_eq!(
        steps.events().last(),
        Some(&name_of(AuditEvent::LinkPrefetched))
    );

    let approved = steps
        .signin
        .approve(token_id, Some(number), phone.client.clone(), Utc::now())
        .await
        .unwrap();
    assert_eq!(approved, ApprovalOutcome::Approved);
    let waited = steps.signin.wait(laptop.asker(), Utc::now()).await.unwrap();
    let WaitOutcome::SignedIn(signed_in) = waited else {
        panic!("expected a sign-in, got {waited:?}");
    };
    assert_eq!(signed_in.request.completed_by, Some(CompletedBy::Approval));
    let audit = steps.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.event, name_of(AuditEvent::SignedIn));
    assert_eq!(
        last.user_agent.as_deref(),
        Some("laptop"),
        "the waiting browser signs in"
    );
    let closed = steps.signin.wait(laptop.asker(), Utc::now()).await.unwrap();
    assert!(matches!(closed, WaitOutcome::Closed));
}

#[actix_web::test]
async fn a_wrong_number_cancels_the_request_and_warns_the_member_and_the_admins() {
    let steps = steps().await;
    steps.add_member("root@example.org", "admin");
    steps.add_member("ada@example.org", "member");
    let laptop = Browser::new("laptop");
    let phone = Browser::new("phone");
    steps.ask(&laptop, "ada@example.org", Utc::now()).await;
    let (token, _) = steps.secrets(1).await;
    let right = steps.request_for("ada@example.org").approval_number;
    let wrong = ApprovalNumber::parse(if right.value() == 10 { "11" } else { "10" }).unwrap();

    let outcome = steps
        .signin
        .approve(
            steps.signin.verify_token(Some(&token)),
            Some(wrong),
            phone.client.clone(),
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(outcome, ApprovalOutcome::Mismatch { locked: false });
    assert_eq!(
        steps.events().last(),
        Some(&name_of(AuditEvent::ApprovalMismatch))
    );
    let request = steps.request_for("ada@example.org");
    assert!(request.cancelled_at.is_some() && request.approval_mismatch_at.is_some());
    // The sign-in mail, then one warning each: the member's first.
    let mails = steps.smtp.wait_for(3, Duration::from_secs(10)).await;
    let warned: Vec<_> = mails[1..3].iter().map(|m| m.to[0].clone()).collect();
    assert_eq!(warned, ["ada@example.org", "root@example.org"]);
    assert_eq!(
        mails[1].header("Subject").as_deref(),
        Some("Sign-in approval failed")
    );
    let waited = steps.signin.wait(laptop.asker(), Utc::now()).await.unwrap();
    assert!(matches!(waited, WaitOutcome::Closed));
}

#[actix_web::test]
async fn not_you_cancels_the_request_once_and_tells_the_admins() {
    let steps = steps().await;
    steps.add_member("root@example.org", "admin");
    steps.add_member("ada@example.org", "member");
    let laptop = Browser::new("laptop");
    steps.ask(&laptop, "ada@example.org", Utc::now()).await;
    let (token, _) = steps.secrets(1).await;
    let token_id = steps.signin.verify_token(Some(&token)).unwrap();

    let outcome = steps
        .signin
        .cancel(token_id.clone(), laptop.client.clone(), Utc::now())
        .await
        .unwrap();

    assert_eq!(outcome, CancelOutcome::Cancelled);
    assert_eq!(
        steps.events().last(),
        Some(&name_of(AuditEvent::LinkCancelled))
    );
    let told = steps.mail(2).await;
    assert_eq!(told.to, vec!["root@example.org".to_string()]);
    let again = steps
        .signin
        .cancel(token_id.clone(), laptop.client.clone(), Utc::now())
        .await
        .unwrap();
    assert_eq!(again, CancelOutcome::NotOpen);
    let link = steps
        .signin
        .redeem_link(Some(token_id), laptop.asker(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(link, Redemption::Refused(Refusal::Used)));
}

#[actix_web::test]
async fn a_break_glass_link_is_audited_with_its_actor_and_works_in_any_browser() {
    let steps = steps().await;
    steps.add_member("ada@example.org", "member");
    let reason = BreakGlassReason::parse("lost her phone").unwrap();
    let mut conn = steps.conn();

    let stranger = signin::break_glass(
        &mut conn,
        &steps.settings,
        &steps.keys.token,
        &address("eve@example.org"),
        &reason,
        "cli".into(),
        Utc::now(),
    )
    .unwrap();
    assert!(matches!(stranger, BreakGlass::NotAMember));
    let made = signin::break_glass(
        &mut conn,
        &steps.settings,
        &steps.keys.token,
        &address("ada@example.org"),
        &reason,
        "cli".into(),
        Utc::now(),
    )
    .unwrap();
    let BreakGlass::Issued(made) = made else {
        panic!("expected a link, got {made:?}");
    };
    assert_eq!(made.request.browser_digest, None, "no browser asked for it");
    let audit = steps.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.event, name_of(AuditEvent::LinkRequested));
    assert_eq!(last.actor.as_deref(), Some("cli"));
    assert_eq!(last.detail, "break-glass: lost her phone");

    let link = made.link.expose_secret().to_string();
    let token = urldecode(link.split("token=").nth(1).unwrap());
    let elsewhere = Browser::new("borrowed laptop");
    let outcome = steps
        .signin
        .redeem_link(
            steps.signin.verify_token(Some(&token)),
            elsewhere.asker(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, Redemption::SignedIn(_)), "{outcome:?}");
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert!(
        steps.smtp.received().is_empty(),
        "a break-glass link is never mailed"
    );
    // Nothing else was asked for this address.
    assert_eq!(
        sign_in_request::count_since(
            &mut conn,
            made.member.id,
            Utc::now() - chrono::Duration::hours(1)
        )
        .unwrap(),
        1
    );
}
