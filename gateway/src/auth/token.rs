//! Bearer tokens the handshake issues: `kappa1.<payload>.<signature>`, the
//! payload naming the user and the expiry, signed with HMAC-SHA256.
//!
//! Signed rather than stored, so any gateway that shares the secret
//! (`--token-secret`) accepts a token another issued, like the stateless
//! statement handles; without a shared secret each gateway makes its own at
//! start and its tokens end with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "kappa1.";

/// Issues and checks tokens.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer with `secret` (or a random one), issuing tokens valid for `ttl`.
    pub fn new(secret: Option<&str>, ttl: Duration) -> Self {
        let key = match secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Self { key, ttl }
    }

    /// A token for `user`, valid from now for the signer's time to live.
    pub fn issue(&self, user: &str) -> String {
        let expires = now_s().saturating_add(self.ttl.as_secs());
        let payload = URL_SAFE_NO_PAD.encode(format!("{expires}:{user}"));
        format!("{PREFIX}{payload}.{}", self.sign(&payload))
    }

    /// The user a token of ours names, if its signature holds and it has not
    /// expired. `None` for anything else (including tokens of other kinds).
    pub fn verify(&self, token: &str) -> Option<String> {
        let (payload, signature) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?)
            .ok()?;
        let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let (expires, user) = decoded.split_once(':')?;
        (expires.parse::<u64>().ok()? > now_s()).then(|| user.to_string())
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_until_it_expires_and_only_for_its_signer() {
        let signer = TokenSigner::new(Some("shared"), Duration::from_secs(60));
        let token = signer.issue("analyst");
        assert_eq!(signer.verify(&token).as_deref(), Some("analyst"));
        // Another gateway with the same secret accepts it; one without does not.
        let replica = TokenSigner::new(Some("shared"), Duration::from_secs(60));
        assert_eq!(replica.verify(&token).as_deref(), Some("analyst"));
        assert_eq!(
            TokenSigner::new(None, Duration::from_secs(60)).verify(&token),
            None
        );
        // Tampering with the payload breaks the signature.
        let (_, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged = format!(
            "kappa1.{}.{signature}",
            URL_SAFE_NO_PAD.encode(format!("{}:admin", now_s() + 60))
        );
        assert_eq!(signer.verify(&forged), None);
        let expired = TokenSigner::new(Some("shared"), Duration::ZERO).issue("analyst");
        assert_eq!(signer.verify(&expired), None);
        assert_eq!(signer.verify("not a token"), None);
    }
}
