//! Row ids, one type per table, so that a member's id cannot be passed where a session's is
//! expected. Each is the table's `BIGSERIAL`, read and written by diesel as `BigInt`.

/// Declares an id type for one table's primary key.
macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            serde::Serialize,
            serde::Deserialize,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// An id as a form, a path or the session carries it; ids start at 1.
            pub fn parse(text: &str) -> Option<Self> {
                text.parse::<i64>().ok().filter(|id| *id > 0).map($name)
            }

            /// An id known to be of this table (diesel reads ids as this type directly).
            pub const fn new(id: i64) -> Self {
                $name(id)
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::BigInt, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <i64 as diesel::serialize::ToSql<diesel::sql_types::BigInt, diesel::pg::Pg>>::to_sql(
                    &self.0, out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::BigInt, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                <i64 as diesel::deserialize::FromSql<diesel::sql_types::BigInt, diesel::pg::Pg>>::from_sql(
                    bytes,
                )
                .map($name)
            }
        }
    };
}

row_id!(
    /// `members.id`.
    MemberId
);
row_id!(
    /// `sign_in_requests.id`, which audit rows name as their `request_id`.
    RequestId
);
row_id!(
    /// `sessions.id`: not secret (the cookie holds a key whose digest the row keeps).
    SessionId
);
row_id!(
    /// `apps.id`.
    AppId
);
row_id!(
    /// `passkeys.id`.
    PasskeyId
);
row_id!(
    /// `login_audit.id` (the chain's order is `seq`, which has no gaps; ids may skip).
    AuditId
);
row_id!(
    /// `login_audit_checkpoints.id`.
    CheckpointId
);
row_id!(
    /// `app_sessions.id`.
    AppSessionId
);
row_id!(
    /// `groups.id`.
    GroupId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_positive_numbers() {
        assert_eq!(MemberId::parse("42").map(MemberId::get), Some(42));
        for bad in ["0", "-1", "", " 42", "4x", "9223372036854775808"] {
            assert_eq!(MemberId::parse(bad), None, "{bad:?}");
        }
    }
}
