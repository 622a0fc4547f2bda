use std::fmt;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// What a member may do. `admin`: everything; `auditor`: read-only dashboard and audit;
/// `member`: dashboard and their own sessions. Stored as its name (`members.role`, whose
/// CHECK constraint admits exactly these three), read and written by diesel as this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Auditor,
    Member,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role must be admin, auditor or member")]
pub struct RoleError;

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Auditor, Role::Member];

    pub fn parse(text: &str) -> Result<Self, RoleError> {
        match text.trim() {
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            "member" => Ok(Role::Member),
            _ => Err(RoleError),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Member => "member",
        }
    }

    pub fn can_read_audit(self) -> bool {
        matches!(self, Role::Admin | Role::Auditor)
    }

    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql<Text, Pg> for Role {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

impl FromSql<Text, Pg> for Role {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        Ok(Role::parse(&text)?)
    }
}

impl std::str::FromStr for Role {
    type Err = RoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
