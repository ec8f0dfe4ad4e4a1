//! The NATS users of `nats/permissions.conf`, one per service, and how each connects.
//!
//! Every user subscribes only to its own inbox prefix (`_INBOX_<user>`), so the
//! client must use that prefix for request replies: [`ServiceUser::connect_options`]
//! sets it together with the credentials.

/// A service's NATS user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceUser {
    /// Membership sources (pod watcher, heartbeat watcher).
    Watcher,
    /// The ring reducer.
    Reducer,
    /// Ring members.
    Node,
    /// Metrics collector and local autoscaler.
    Collector,
    /// WebSocket bridge (read-only).
    Bridge,
    /// Operators, provisioning and the CLI tools.
    Admin,
}

impl ServiceUser {
    /// Every user, in the order of the permission matrix.
    pub const ALL: [ServiceUser; 6] = [
        Self::Watcher,
        Self::Reducer,
        Self::Node,
        Self::Collector,
        Self::Bridge,
        Self::Admin,
    ];

    /// The user name in `nats/permissions.conf`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Watcher => "watcher",
            Self::Reducer => "reducer",
            Self::Node => "node",
            Self::Collector => "collector",
            Self::Bridge => "bridge",
            Self::Admin => "admin",
        }
    }

    /// The inbox prefix this user may subscribe to (`_INBOX_watcher`).
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// The environment variable the server configs read this user's password from.
    pub fn password_env(self) -> String {
        format!(
            "RINGSIDE_NATS_PASSWORD_{}",
            self.name().to_ascii_uppercase()
        )
    }

    /// Connect options with this user's credentials and inbox prefix.
    pub fn connect_options(self, password: impl Into<String>) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::with_user_and_password(self.name().into(), password.into())
            .custom_inbox_prefix(self.inbox_prefix())
            .name(format!("ringside-{}", self.name()))
    }
}

impl std::fmt::Display for ServiceUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
