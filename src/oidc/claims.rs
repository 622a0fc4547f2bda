//! What ID tokens, userinfo and logout tokens say about a member, by scope.

use serde::Serialize;

use crate::domain::oidc::Scopes;
use crate::models::member::Member;

/// The claims `email`, `profile` and `groups` allow; userinfo answers these with `sub`, and
/// the ID token carries them too.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MemberClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// The member's groups, and their role as `latchkey:<role>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

impl MemberClaims {
    pub fn of(member: &Member, scopes: Scopes) -> Self {
        let mut claims = Self::default();
        if scopes.email {
            claims.email = Some(member.email.as_str().to_string());
            // Every address signed in with was proved by a link or code sent to it.
            claims.email_verified = Some(true);
        }
        if scopes.profile {
            claims.name = member.name.as_ref().map(|name| name.as_str().to_string());
            claims.preferred_username = Some(member.email.as_str().to_string());
        }
        if scopes.groups {
            let mut groups: Vec<String> = member
                .groups
                .iter()
                .map(|group| group.as_str().to_string())
                .collect();
            groups.push(format!("latchkey:{}", member.role().as_str()));
            claims.groups = Some(groups);
        }
        claims
    }
}

/// The member's id as the opaque, stable `sub` every app sees (never the address).
pub fn subject(member: &Member) -> String {
    member.id.to_string()
}

/// An ID token (OpenID Connect Core §2).
#[derive(Debug, Serialize)]
pub struct IdToken<'a> {
    pub iss: &'a str,
    pub sub: String,
    pub aud: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    pub amr: &'a [String],
    pub sid: &'a str,
    #[serde(flatten)]
    pub member: MemberClaims,
}

/// RFC 8176 methods for how the session signed in: a link or code is a one-time password
/// (`otp`); a passkey is proof of possession with user verification (`pop`, `user`); a
/// cross-device approval adds `mca` (a second channel confirmed it).
pub fn amr(signed_in_by: Option<&str>) -> Vec<String> {
    let methods: &[&str] = match signed_in_by {
        Some("passkey") => &["pop", "user"],
        Some("approval") => &["otp", "mca"],
        _ => &["otp"],
    };
    methods.iter().map(|m| (*m).to_string()).collect()
}

/// A logout token (Back-Channel Logout 1.0 §2.4): no `nonce`, an `events` member.
#[derive(Debug, Serialize)]
pub struct LogoutToken<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub sub: String,
    pub sid: &'a str,
    pub events: serde_json::Value,
}

pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::role::Role;

    #[test]
    fn scopes_decide_what_is_said() {
        let ann = Member::for_test(7, "ann@example.org", Role::Admin, &["ops"]);
        let none = MemberClaims::of(&ann, Scopes::parse("openid"));
        assert_eq!(serde_json::to_value(&none).unwrap(), serde_json::json!({}));
        let all = MemberClaims::of(&ann, Scopes::parse("openid email profile groups"));
        let value = serde_json::to_value(&all).unwrap();
        assert_eq!(value["email"], "ann@example.org");
        assert_eq!(value["email_verified"], true);
        assert_eq!(value["preferred_username"], "ann@example.org");
        assert_eq!(
            value["groups"],
            serde_json::json!(["ops", "latchkey:admin"])
        );
        assert_eq!(subject(&ann), "7");
    }

    #[test]
    fn amr_follows_how_the_session_signed_in() {
        assert_eq!(amr(Some("link")), ["otp"]);
        assert_eq!(amr(Some("code")), ["otp"]);
        assert_eq!(amr(Some("approval")), ["otp", "mca"]);
        assert_eq!(amr(Some("passkey")), ["pop", "user"]);
    }
}
