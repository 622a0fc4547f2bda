use std::fmt;

/// What a member may do. `admin`: everything; `auditor`: read-only dashboard and audit;
/// `member`: dashboard and their own sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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

impl std::str::FromStr for Role {
    type Err = RoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
