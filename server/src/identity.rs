//! Who is asking: the principal a statement runs as, which every layer
//! passes down and none re-derives.

/// The role whose members may manage users, roles, tokens and settings.
pub const ADMIN_ROLE: &str = "admin";

/// The name runs are recorded under when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// The user (and roles) a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: String,
    roles: Vec<String>,
    authenticated: bool,
}

impl Principal {
    /// An authenticated user with its roles.
    pub fn user(name: impl Into<String>, mut roles: Vec<String>) -> Self {
        roles.sort();
        roles.dedup();
        Self {
            name: name.into(),
            roles,
            authenticated: true,
        }
    }

    /// Whoever reaches a server that runs without authentication (only on
    /// loopback, or by an explicit opt-out): nothing is checked, as before
    /// identities existed.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_string(),
            roles: Vec::new(),
            authenticated: false,
        }
    }

    /// The user's name (`anonymous` without authentication).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The roles the user is a member of, sorted.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Whether this principal came from a credential (authentication is on).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether it may administer the server: a member of `admin`, or anyone
    /// when authentication is off.
    pub fn is_admin(&self) -> bool {
        !self.authenticated || self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// The role `current_role()` answers: the first of the user's roles.
    pub fn current_role(&self) -> Option<&str> {
        self.roles.first().map(String::as_str)
    }
}
