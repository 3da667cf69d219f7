//! Who is calling: every Flight call is authenticated before it reaches the
//! service, and carries the caller's [`Identity`] (their [`Grants`]).
//!
//! * No users file: anyone may connect and read everything (the log says so
//!   at start).
//! * `authorization: Basic …` (user and password) on the handshake returns
//!   `authorization: Bearer <token>` for the calls that follow; Basic is
//!   also accepted on any call.
//! * `authorization: Bearer …`: a token the handshake issued, or a static
//!   token from the users file.

pub mod file;
pub mod grants;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

pub use file::UsersFile;
pub use grants::{GrantedCatalog, GrantedTail, Grants};
pub use token::TokenSigner;

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials on a call that needs them.
    #[error(
        "sign in: send `authorization: Basic` (user and password) to the handshake, \
         or `authorization: Bearer <token>`"
    )]
    Missing,
    /// Wrong user, password or token, or an expired token.
    #[error("{0}")]
    Rejected(String),
    /// The user may not read this table.
    #[error("permission denied: you may not read {0}")]
    NotGranted(String),
    /// The users file is not valid.
    #[error("users file: {0}")]
    Config(String),
}

/// The authenticated caller of one call.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user (`anonymous` without a users file).
    pub user: String,
    /// What they may read.
    pub grants: Grants,
    /// The tables they may create and drop by SQL.
    pub define: Grants,
}

/// A user, as the authenticator keeps them.
#[derive(Debug)]
struct User {
    password_hash: Option<String>,
    grants: Grants,
    define: Grants,
}

/// A static token, by the SHA-256 of its text.
#[derive(Debug)]
struct StaticToken {
    user: String,
    expires: SystemTime,
}

/// Base64 with or without its `=` padding: Go's Flight client (under ADBC)
/// sends Basic credentials unpadded, most others padded.
/// The caller's name without a users file (or a user name given with it).
pub const ANONYMOUS: &str = "anonymous";

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How long a checked password is remembered, so a client that sends
/// Basic on every call pays the (deliberately slow) hash once.
const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(60);

/// Checks the credentials of every call.
#[derive(Debug)]
pub struct Authenticator {
    /// `None`: anonymous access.
    users: Option<HashMap<String, User>>,
    tokens: HashMap<String, StaticToken>,
    signer: TokenSigner,
    /// SHA-256 of `user:password` pairs checked recently.
    checked: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Authenticator {
    /// Anyone may connect and read everything.
    pub fn anonymous(signer: TokenSigner) -> Self {
        Self {
            users: None,
            tokens: HashMap::new(),
            signer,
            checked: Mutex::default(),
        }
    }

    /// Only the users of `file`, each with their grants.
    pub fn with_users(file: &UsersFile, signer: TokenSigner) -> Result<Self, AuthError> {
        let users = file
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    User {
                        password_hash: u.password_hash.clone(),
                        grants: Grants::only(&u.tables),
                        define: Grants::only(&u.define),
                    },
                )
            })
            .collect();
        let mut tokens = HashMap::new();
        for t in &file.tokens {
            let expires = chrono::DateTime::parse_from_rfc3339(&t.expires).map_err(|e| {
                AuthError::Config(format!(
                    "the token of user '{}': expires '{}': {e}",
                    t.user, t.expires
                ))
            })?;
            let expires = SystemTime::from(expires.with_timezone(&chrono::Utc));
            tokens.insert(
                t.sha256.to_ascii_lowercase(),
                StaticToken {
                    user: t.user.clone(),
                    expires,
                },
            );
        }
        Ok(Self {
            users: Some(users),
            tokens,
            signer,
            checked: Mutex::default(),
        })
    }

    /// Whether anyone may connect.
    pub fn is_anonymous(&self) -> bool {
        self.users.is_none()
    }

    /// The caller of a call with `metadata`.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Identity, AuthError> {
        let Some(users) = &self.users else {
            return Ok(Identity {
                user: basic_user(metadata).unwrap_or_else(|| ANONYMOUS.into()),
                grants: Grants::all(),
                define: Grants::all(),
            });
        };
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let (scheme, credentials) = header.trim().split_once(' ').ok_or(AuthError::Missing)?;
        let user = match scheme.to_ascii_lowercase().as_str() {
            "basic" => self.check_password(users, credentials.trim())?,
            "bearer" => self.check_token(credentials.trim())?,
            _ => return Err(AuthError::Missing),
        };
        let (grants, define) = users
            .get(&user)
            .map(|u| (u.grants.clone(), u.define.clone()))
            .ok_or_else(|| AuthError::Rejected(format!("user '{user}' no longer exists")))?;
        Ok(Identity {
            user,
            grants,
            define,
        })
    }

    /// A bearer token for `identity` (what the handshake returns).
    pub fn issue_token(&self, identity: &Identity) -> String {
        self.signer.issue(&identity.user)
    }

    /// The `authorization` header a gateway sends on the calls it makes for
    /// `user`'s query to the other gateways of its cluster (which share its
    /// `--token-secret`), so they check the caller as they check any call;
    /// `None` without sign-in.
    pub fn on_behalf_of(&self, user: &str) -> Option<String> {
        self.users
            .as_ref()
            .map(|_| format!("Bearer {}", self.signer.issue(user)))
    }

    fn check_password(
        &self,
        users: &HashMap<String, User>,
        credentials: &str,
    ) -> Result<String, AuthError> {
        let rejected = || AuthError::Rejected("wrong user name or password".into());
        let decoded = BASE64.decode(credentials).map_err(|_| rejected())?;
        let key: [u8; 32] = Sha256::digest(&decoded).into();
        if let Some((user, at)) = self.checked.lock().expect("password cache").get(&key)
            && at.elapsed() < PASSWORD_CACHE_TTL
        {
            return Ok(user.clone());
        }
        let text = String::from_utf8(decoded).map_err(|_| rejected())?;
        let (name, password) = text.split_once(':').ok_or_else(rejected)?;
        let hash = users
            .get(name)
            .and_then(|u| u.password_hash.as_deref())
            .ok_or_else(rejected)?;
        if !verify_password(password, hash) {
            return Err(rejected());
        }
        let mut checked = self.checked.lock().expect("password cache");
        checked.retain(|_, (_, at)| at.elapsed() < PASSWORD_CACHE_TTL);
        checked.insert(key, (name.to_string(), Instant::now()));
        Ok(name.to_string())
    }

    fn check_token(&self, token: &str) -> Result<String, AuthError> {
        if let Some(user) = self.signer.verify(token) {
            return Ok(user);
        }
        let digest = hex(&Sha256::digest(token.as_bytes()));
        match self.tokens.get(&digest) {
            Some(t) if t.expires > SystemTime::now() => Ok(t.user.clone()),
            Some(_) => Err(AuthError::Rejected("the token has expired".into())),
            None => Err(AuthError::Rejected(
                "unknown or expired token: sign in again".into(),
            )),
        }
    }
}

/// An argon2 or bcrypt PHC string matches `password`.
fn verify_password(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

/// An argon2id hash of `password`, for the users file.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// The user name of a Basic header, unchecked (anonymous mode keeps it for
/// the log).
fn basic_user(metadata: &MetadataMap) -> Option<String> {
    let header = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, credentials) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let text = String::from_utf8(BASE64.decode(credentials.trim()).ok()?).ok()?;
    Some(text.split_once(':')?.0.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tonic interceptor: authenticates the call and hands its identity to
/// the service in the request's extensions.
pub fn interceptor(
    auth: Arc<Authenticator>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        let identity = auth
            .authenticate(request.metadata())
            .map_err(|e| crate::error::auth_status(&e))?;
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> UsersFile {
        UsersFile::parse(&format!(
            r#"
            [[users]]
            name = "analyst"
            password_hash = "{}"
            tables = ["orders"]

            [[users]]
            name = "legacy"
            password_hash = "{}"

            [[tokens]]
            user = "analyst"
            sha256 = "{}"
            expires = "2999-01-01T00:00:00Z"

            [[tokens]]
            user = "analyst"
            sha256 = "{}"
            expires = "2000-01-01T00:00:00Z"
            "#,
            hash_password("s3cret"),
            bcrypt::hash("old", 4).unwrap(),
            hex(&Sha256::digest(b"static-token")),
            hex(&Sha256::digest(b"old-token")),
        ))
        .unwrap()
    }

    fn call(header: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", header.parse().unwrap());
        metadata
    }

    fn basic(user: &str, password: &str) -> MetadataMap {
        call(&format!(
            "Basic {}",
            BASE64.encode(format!("{user}:{password}"))
        ))
    }

    #[test]
    fn passwords_tokens_and_their_failures() {
        let auth =
            Authenticator::with_users(&users(), TokenSigner::new(None, Duration::from_secs(60)))
                .unwrap();
        let analyst = auth.authenticate(&basic("analyst", "s3cret")).unwrap();
        assert_eq!(analyst.user, "analyst");
        assert!(analyst.grants.allows("default", "orders"));
        assert!(!analyst.grants.allows("default", "payments"));
        assert_eq!(
            auth.authenticate(&basic("legacy", "old")).unwrap().user,
            "legacy"
        );
        for (user, password) in [("analyst", "wrong"), ("nobody", "s3cret"), ("legacy", "")] {
            assert!(
                matches!(
                    auth.authenticate(&basic(user, password)),
                    Err(AuthError::Rejected(_))
                ),
                "{user}:{password}"
            );
        }
        let token = auth.issue_token(&analyst);
        assert_eq!(
            auth.authenticate(&call(&format!("Bearer {token}")))
                .unwrap()
                .user,
            "analyst"
        );
        assert_eq!(
            auth.authenticate(&call("Bearer static-token"))
                .unwrap()
                .user,
            "analyst"
        );
        assert!(matches!(
            auth.authenticate(&call("Bearer old-token")),
            Err(AuthError::Rejected(m)) if m.contains("expired")
        ));
        assert!(matches!(
            auth.authenticate(&MetadataMap::new()),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn without_users_anyone_reads_everything() {
        let auth = Authenticator::anonymous(TokenSigner::new(None, Duration::from_secs(60)));
        let anyone = auth.authenticate(&MetadataMap::new()).unwrap();
        assert!(anyone.grants.is_all());
    }

    #[test]
    fn a_users_file_is_checked_when_read() {
        for bad in [
            "[[users]]\nname = \"a\"\npassword_hash = \"plain\"\n",
            "[[tokens]]\nuser = \"ghost\"\nsha256 = \"00\"\nexpires = \"2999-01-01T00:00:00Z\"\n",
            "[[users]]\nname = \"a\"\nunknown = 1\n",
        ] {
            assert!(UsersFile::parse(bad).is_err(), "{bad}");
        }
    }
}
