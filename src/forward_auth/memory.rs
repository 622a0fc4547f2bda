//! What forward auth remembers in memory, so that checks write nothing per request: when a
//! member was last refused an app (`app_denied` at most once a minute, whatever the app), and
//! the assertions it signed in the last few seconds. None is needed for a decision: the app
//! session, the session, the member and the app come from the session cache, which every
//! sign-out, revocation, deactivation or app change empties on every instance, and a
//! remembered assertion is only handed out after that decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::app_origin::AppOrigin;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{AppId, MemberId, SessionId};
use crate::domain::member_name::MemberName;
use crate::domain::role::Role;

/// How often a refusal of one member for one app is audited.
pub const DENIED_AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// Past this many entries a map is cleared rather than grown: forgetting costs one signature
/// (or one audit row a minute early), never a wrong decision.
const MAX_ENTRIES: usize = 100_000;
/// How long a signed assertion is handed out again (its `exp` stays `iat` + 60 s): signing
/// (Ed25519) is the costliest step of a check, and one page load asks for dozens at once.
pub const ASSERTION_REUSE_SECS: i64 = 10;

/// What an assertion says, besides its times: it is reused only while all of it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionFor {
    pub session_id: SessionId,
    pub app_id: AppId,
    pub aud: AppOrigin,
    pub email: EmailAddress,
    pub name: Option<MemberName>,
    pub role: Role,
    /// The role, then the groups.
    pub groups: Vec<String>,
}

#[derive(Debug)]
struct Signed {
    about: AssertionFor,
    iat: i64,
    token: Arc<str>,
}

#[derive(Debug, Default)]
pub struct ForwardAuthMemory {
    denied: Mutex<HashMap<MemberId, Instant>>,
    assertions: Mutex<HashMap<(SessionId, AppId), Signed>>,
}

impl ForwardAuthMemory {
    /// An assertion signed for exactly this less than [`ASSERTION_REUSE_SECS`] ago.
    pub fn fresh_assertion(&self, about: &AssertionFor, now: i64) -> Option<Arc<str>> {
        let map = self.assertions.lock().ok()?;
        let signed = map.get(&(about.session_id, about.app_id))?;
        (signed.about == *about && (0..ASSERTION_REUSE_SECS).contains(&(now - signed.iat)))
            .then(|| Arc::clone(&signed.token))
    }

    pub fn remember_assertion(&self, about: AssertionFor, iat: i64, token: Arc<str>) {
        if let Ok(mut map) = self.assertions.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                (about.session_id, about.app_id),
                Signed { about, iat, token },
            );
        }
    }

    /// True when a refusal of `member_id` should be audited now (and notes it): once a minute
    /// per member whatever the app, so that naming a thousand origins writes one row.
    pub fn should_audit_denial(&self, member_id: MemberId) -> bool {
        let Ok(mut map) = self.denied.lock() else {
            return true;
        };
        let now = Instant::now();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, at| now.duration_since(*at) < DENIED_AUDIT_INTERVAL);
        }
        match map.get(&member_id) {
            Some(at) if now.duration_since(*at) < DENIED_AUDIT_INTERVAL => false,
            _ => {
                map.insert(member_id, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assertion_is_reused_only_while_fresh_and_only_for_the_same_claims() {
        let memory = ForwardAuthMemory::default();
        let about = AssertionFor {
            session_id: SessionId::new(1),
            app_id: AppId::new(2),
            aud: AppOrigin::parse("https://wiki.example.org").unwrap(),
            email: EmailAddress::parse("ann@example.org").unwrap(),
            name: None,
            role: Role::Member,
            groups: vec!["member".into()],
        };
        assert_eq!(memory.fresh_assertion(&about, 100), None);
        memory.remember_assertion(about.clone(), 100, "t1".into());
        assert_eq!(memory.fresh_assertion(&about, 109).as_deref(), Some("t1"));
        assert_eq!(memory.fresh_assertion(&about, 110), None, "too old");
        assert_eq!(memory.fresh_assertion(&about, 99), None, "from the future");
        let promoted = AssertionFor {
            role: Role::Admin,
            ..about.clone()
        };
        assert_eq!(memory.fresh_assertion(&promoted, 101), None, "another role");
        let joined = AssertionFor {
            groups: vec!["member".into(), "ops".into()],
            ..about.clone()
        };
        assert_eq!(memory.fresh_assertion(&joined, 101), None, "other groups");
        let named = AssertionFor {
            name: MemberName::parse("Ann Lee").unwrap(),
            ..about.clone()
        };
        assert_eq!(memory.fresh_assertion(&named, 101), None, "a new name");
        let moved = AssertionFor {
            aud: AppOrigin::parse("https://wiki2.example.org").unwrap(),
            ..about
        };
        assert_eq!(memory.fresh_assertion(&moved, 101), None, "another origin");
    }

    #[test]
    fn denials_are_audited_once_a_minute_per_member_whatever_the_app() {
        let memory = ForwardAuthMemory::default();
        assert!(memory.should_audit_denial(MemberId::new(1)));
        assert!(!memory.should_audit_denial(MemberId::new(1)));
        assert!(memory.should_audit_denial(MemberId::new(2)));
    }
}
