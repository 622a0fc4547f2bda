//! The SHA-256 (or HMAC-SHA256) digests the database keeps instead of secrets, one type per
//! column, so that a token's digest cannot be looked up where a session key's belongs. Each
//! is exactly 32 bytes (the columns' CHECK constraints say the same), read and written by
//! diesel as `bytea`.

/// Declares a 32-byte digest type for one kind of secret.
macro_rules! digest {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const fn new(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }

            /// SHA-256 of `data`.
            pub fn sha256(data: &[u8]) -> Self {
                $name(crate::crypto::sha256(data))
            }

            /// Random bytes no secret hashes to: the digest of a request nobody can complete.
            pub fn unmatchable() -> Self {
                $name(crate::crypto::random_bytes())
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// In constant time, where the other side came from a guess.
            pub fn ct_eq(&self, other: &Self) -> bool {
                subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
            }
        }

        /// Not secret, but a handle on one; logs have no use for it.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Bytea, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <[u8] as diesel::serialize::ToSql<diesel::sql_types::Bytea, diesel::pg::Pg>>::to_sql(
                    &self.0[..],
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Bytea, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let bytes = bytes.as_bytes();
                let array: [u8; 32] = bytes.try_into().map_err(|_| {
                    format!(concat!(stringify!($name), " of {} bytes, not 32"), bytes.len())
                })?;
                Ok($name(array))
            }
        }
    };
}

digest!(
    /// `sign_in_requests.token_digest`: SHA-256 of the id a sign-in link's token names.
    TokenDigest
);
digest!(
    /// `sign_in_requests.code_digest`: HMAC of the six-digit code, bound to one request.
    CodeDigest
);
digest!(
    /// `sign_in_requests.browser_digest`: SHA-256 of the asking browser's binding secret.
    BindingDigest
);
digest!(
    /// `member_browsers.browser_digest`: SHA-256 of a browser's long-lived id.
    DeviceDigest
);
digest!(
    /// `sessions.key_digest`: SHA-256 of the session key in the cookie.
    SessionKeyDigest
);

digest!(
    /// `passkey_ceremonies.handle_digest`: SHA-256 of the handle a session keeps for a
    /// passkey ceremony under way.
    CeremonyDigest
);

digest!(
    /// `app_sessions.key_digest`: SHA-256 of the key in an app's own cookie.
    AppKeyDigest
);

digest!(
    /// `app_sessions.code_digest`: SHA-256 of the one-time code an app's callback redeems.
    AppCodeDigest
);

digest!(
    /// `apps.client_secret_digest`: SHA-256 of an OpenID Connect client's secret.
    ClientSecretDigest
);

digest!(
    /// `oidc_codes.code_digest`: SHA-256 of an authorization code.
    OidcCodeDigest
);

digest!(
    /// `oidc_tokens.token_digest`: SHA-256 of an access or refresh token.
    OidcTokenDigest
);

impl SessionKeyDigest {
    /// As the invalidation notifications carry it (`s:<hex>`).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        bytes.try_into().ok().map(SessionKeyDigest)
    }
}

impl AppKeyDigest {
    /// As the invalidation notifications carry it (`x:<hex>`).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        bytes.try_into().ok().map(AppKeyDigest)
    }
}

impl OidcTokenDigest {
    /// As the invalidation notifications carry it (`t:<hex>`).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        bytes.try_into().ok().map(OidcTokenDigest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_key_digests_read_from_notifications_are_32_bytes() {
        let digest = SessionKeyDigest::sha256(b"key");
        assert_eq!(
            SessionKeyDigest::from_hex(&hex::encode(digest.as_bytes())),
            Some(digest)
        );
        assert_eq!(SessionKeyDigest::from_hex("abcd"), None);
        assert_eq!(SessionKeyDigest::from_hex("zz"), None);
    }

    #[test]
    fn debug_shows_no_bytes() {
        assert_eq!(
            format!("{:?}", TokenDigest::new([7; 32])),
            "TokenDigest(..)"
        );
    }
}
