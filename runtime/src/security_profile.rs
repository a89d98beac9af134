//! What a container asks of a security module (seccomp, AppArmor): the runtime's default,
//! none, or a named profile on the node.

/// A profile request for seccomp or AppArmor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProfileRequest {
    /// What the runtime thinks right: for seccomp and AppArmor, berth's default profile.
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A profile on the node: a file path for seccomp, a loaded profile's name for
    /// AppArmor.
    Localhost(String),
}
