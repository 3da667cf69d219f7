//! The users file (`--users`): who may connect and what each may read.
//!
//! ```toml
//! [[users]]
//! name = "analyst"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `kappa-gateway hash-password`; bcrypt works too
//! tables = ["orders", "payments_*", "system.*"]          # what this user may read and list
//! define = ["sandbox_*"]                                 # what they may CREATE EXTERNAL TABLE and DROP (none if absent)
//!
//! [[tokens]]                       # a static token, for a BI tool's service account
//! user = "analyst"                 # acts as this user, with their grants
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! expires = "2027-06-30T00:00:00Z"
//! ```
//!
//! A file separate from the tables' (`--config`): credentials belong in a
//! secret, table definitions in ordinary configuration.

use std::path::Path;

use serde::Deserialize;

use super::AuthError;

/// The parsed users file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Users who log in with a password.
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// Static bearer tokens, each acting as one of `users`.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The login name.
    pub name: String,
    /// A PHC string: argon2 (`$argon2id$…`) or bcrypt (`$2b$…`). Absent:
    /// the user signs in with tokens only.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Table patterns the user may read (`*` matches any run of
    /// characters): `orders`, `kafka.default.orders`, `pay*`, `system.*`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Table patterns the user may create (`CREATE EXTERNAL TABLE`) and
    /// drop; none by default.
    #[serde(default)]
    pub define: Vec<String>,
}

/// One static token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The user it acts as.
    pub user: String,
    /// The SHA-256 of the token, hex: the file never holds the token.
    pub sha256: String,
    /// When it stops working (RFC 3339).
    pub expires: String,
}

impl UsersFile {
    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a users file's text.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let file: Self = toml::from_str(text).map_err(|e| AuthError::Config(e.to_string()))?;
        for token in &file.tokens {
            if !file.users.iter().any(|u| u.name == token.user) {
                return Err(AuthError::Config(format!(
                    "a token acts as user '{}', who is not in [[users]]",
                    token.user
                )));
            }
            if token.sha256.len() != 64 || !token.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(AuthError::Config(format!(
                    "the token of user '{}': sha256 must be 64 hex digits",
                    token.user
                )));
            }
        }
        for user in &file.users {
            if let Some(hash) = &user.password_hash
                && !(hash.starts_with("$argon2") || hash.starts_with("$2"))
            {
                return Err(AuthError::Config(format!(
                    "user '{}': password_hash must be an argon2 or bcrypt hash \
                     (make one with `kappa-gateway hash-password`)",
                    user.name
                )));
            }
        }
        Ok(file)
    }
}
