//! Passwords and tokens. Passwords are hashed with argon2id (memory-hard, the OWASP default);
//! tokens are 256 random bits shown to the client once and stored only as their SHA-256, so a
//! leaked database holds no usable token.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Hashes a password for storage (PHC string: algorithm, parameters, salt and hash).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a stored hash. A malformed stored hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash that [`verify_password`] always rejects, checked when the user does not exist so that
/// a login takes as long for a missing user as for a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password, ever").unwrap_or_default())
}

/// A new session token: 32 random bytes as 64 hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A session's public id (`session_list`, `revoke_session`): the first 8 bytes of a SHA-256 of
/// the token's stored hash, in hex. One way twice over, so it gives nothing towards the token,
/// and it needs no column: tokens issued before sessions had ids have one too.
pub fn session_id(token_hash: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"chat session id\0");
    h.update(token_hash);
    hex::encode(&h.finalize()[..8])
}

/// Tokens are 64 lowercase hex characters; anything else is refused before any lookup.
pub fn token_well_formed(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("anything", "not a phc string"));
        assert!(!verify_password("not a real password, ever!", dummy_hash()));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(token_well_formed(&a));
        assert!(!token_well_formed("short"));
        assert!(!token_well_formed(&a.to_uppercase()));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(token_hash(&a), token_hash(&a));
    }

    #[test]
    fn session_ids_are_short_stable_and_not_the_hash() {
        let h = token_hash(&new_token());
        let id = session_id(&h);
        assert_eq!(id.len(), 16);
        assert_eq!(id, session_id(&h));
        assert_ne!(id, session_id(&token_hash(&new_token())));
        assert!(
            !hex::encode(h).contains(&id),
            "not a piece of the stored hash"
        );
    }
}
