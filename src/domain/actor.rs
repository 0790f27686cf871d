//! Who is calling: the identity and roles taken from a verified token, and the
//! rules of what each role may do. Transport-free: tokens are verified in `auth`.

use super::error::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Viewer,
    Agent,
    Approver,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "agent" => Some(Self::Agent),
            "approver" => Some(Self::Approver),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Agent => "agent",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

/// What a call needs. Every authenticated caller may read its own tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read tasks, agents and events of the caller's tenant.
    Read,
    /// Create and drive tasks, register agents and send heartbeats.
    Write,
    /// Decide approvals.
    Decide,
    /// Start and cancel executions of agents.
    Execute,
}

impl Permission {
    fn granted_by(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (Self::Read, _)
                | (Self::Write, Role::Agent)
                | (Self::Decide, Role::Approver)
                | (Self::Execute, Role::Agent | Role::Approver)
        )
    }
    fn describe(self) -> &'static str {
        match self {
            Self::Read => "read (any role)",
            Self::Write => "write (role agent or admin)",
            Self::Decide => "decide approvals (role approver or admin)",
            Self::Execute => "start or cancel executions (role agent, approver or admin)",
        }
    }
}

/// The verified caller. `tenant` is "" for tokens without a tenant claim: they
/// form their own tenant and never see data of a named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub roles: Vec<Role>,
    pub tenant: String,
    /// Unix seconds at which the token stops being valid.
    pub expires_at: i64,
}

impl Actor {
    /// The subject of Herald's own actions (sweeps, deadline decisions); no
    /// token may carry it, so `decided_by: "herald"` always means the server.
    pub const SYSTEM_SUBJECT: &'static str = "herald";

    /// The actor Herald itself uses for events it causes (liveness sweeps, deadlines).
    pub fn system(tenant: &str) -> Self {
        Self {
            subject: Self::SYSTEM_SUBJECT.into(),
            roles: vec![Role::Admin],
            tenant: tenant.into(),
            expires_at: i64::MAX,
        }
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| permission.granted_by(*r))
    }

    pub fn require(&self, permission: Permission) -> Result<(), AppError> {
        if self.can(permission) {
            Ok(())
        } else {
            let roles: Vec<_> = self.roles.iter().map(|r| r.as_str()).collect();
            Err(AppError::PermissionDenied(format!(
                "this needs permission to {}; the token of '{}' has roles [{}]",
                permission.describe(),
                self.subject,
                roles.join(", ")
            )))
        }
    }
}
