//! Secrets and their hashes: argon2id for passwords (slow on purpose),
//! SHA-256 for random tokens (they have 256 bits of entropy; a slow hash
//! adds nothing), and the `authorization` header's two forms.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};

/// What a session token starts with (handed out by a login).
pub(crate) const SESSION_PREFIX: &str = "tarn_s_";
/// What an API token starts with (made by `CREATE TOKEN`).
pub(crate) const API_TOKEN_PREFIX: &str = "tarn_t_";

/// The argon2id PHC string of `password`, with a fresh random salt.
pub(crate) fn hash_password(password: &str) -> Result<String, String> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash`. A hash that does not
/// parse matches nothing.
pub(crate) fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A new random secret with `prefix`: 32 random bytes, base64url.
pub(crate) fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of `secret`, hex: what is stored and looked up.
pub(crate) fn token_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Base64 with or without its `=` padding: the Go Flight client (inside the
/// ADBC driver) sends Basic credentials unpadded, others padded.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A credential as a client sends it in the `authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer <token>` (also `Token <token>`): a session or API token.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Self::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

impl Credential {
    /// Parses an `authorization` header value. Anything else (another
    /// scheme, bad base64, no `:`) is `None`: no credential.
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, value) = header.trim().split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = LENIENT_BASE64.decode(value).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            return Some(Self::Basic {
                user: user.to_string(),
                password: password.to_string(),
            });
        }
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            return (!value.is_empty()).then(|| Self::Bearer(value.to_string()));
        }
        None
    }

    /// The header value that carries this credential.
    pub fn header(&self) -> String {
        match self {
            Self::Basic { user, password } => {
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
            }
            Self::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(password_matches("correct horse", &hash));
        assert!(!password_matches("correct horsE", &hash));
        assert!(!password_matches("correct horse", "not a hash"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token(API_TOKEN_PREFIX);
        let b = new_token(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.len() > 40 && a.starts_with(API_TOKEN_PREFIX));
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn headers_parse_defensively() {
        let basic = Credential::Basic {
            user: "alice".into(),
            password: "p:w d".into(),
        };
        assert_eq!(Credential::parse(&basic.header()), Some(basic));
        assert_eq!(
            Credential::parse("bearer abc"),
            Some(Credential::Bearer("abc".into()))
        );
        assert_eq!(
            Credential::parse("Token abc"),
            Some(Credential::Bearer("abc".into()))
        );
        // Unpadded, as the Go Flight client sends it.
        let unpadded = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("bob:pw1")
        );
        assert!(!unpadded.ends_with('='));
        assert!(
            matches!(Credential::parse(&unpadded), Some(Credential::Basic { user, password }) if user == "bob" && password == "pw1")
        );
        // An ODBC driver's mangled user name is just a wrong user.
        let odbc = format!("Basic {}", STANDARD.encode("alice};PWD={pw:x"));
        assert!(
            matches!(Credential::parse(&odbc), Some(Credential::Basic { user, .. }) if user == "alice};PWD={pw")
        );
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=",
            "Bearer ",
            "Digest x",
            "Bearer",
        ] {
            assert_eq!(Credential::parse(bad), None, "{bad}");
        }
    }
}
