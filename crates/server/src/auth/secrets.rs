//! Passwords and session tokens, as the best practice has them.
//!
//! Passwords: argon2id with at least OWASP's minimum parameters (19 MiB of
//! memory, two passes, one lane), a fresh random salt each time, stored as
//! a PHC string so the parameters travel with the hash. Hashing is slow on
//! purpose, so it only ever runs on the bounded pool (`pool.rs`).
//!
//! Tokens: 256 random bits, handed to the client once; the server keeps
//! only their SHA-256 (a fast hash is enough for a secret this long: there
//! is nothing to guess) and compares hashes in constant time.

use std::cell::RefCell;
use std::sync::OnceLock;

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use natter_core::TokenHash;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// argon2id memory in KiB (OWASP: at least 19 MiB with t = 2, p = 1).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_PASSES: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

/// Every token starts with this, so the server can tell a token from a
/// password without trying both.
pub const TOKEN_PREFIX: &str = "nt1.";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
        .expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

thread_local! {
    /// argon2's working memory (19 MiB), allocated once per hashing thread
    /// and reused. Left to argon2, each hash allocates and frees it, and
    /// the allocator keeps freed blocks of that size in whichever arena the
    /// thread last used: a login storm grew the server by hundreds of MiB.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The PHC string of `password` with a fresh salt. Slow: pool only.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    let hasher = argon2();
    let output = hash(&hasher, password, salt.as_salt())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(hasher.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches `phc`. A malformed hash matches nothing.
/// Slow: pool only.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(stored) = PasswordHash::new(phc) else {
        return false;
    };
    // The parameters come from the PHC string, so older hashes still verify.
    let hasher = || -> argon2::password_hash::Result<Argon2<'static>> {
        let algorithm = Algorithm::try_from(stored.algorithm)?;
        let version = stored.version.map(Version::try_from).transpose()?;
        let params = Params::try_from(&stored)?;
        Ok(Argon2::new(algorithm, version.unwrap_or_default(), params))
    };
    let (Ok(hasher), Some(salt), Some(expected)) = (hasher(), stored.salt, stored.hash) else {
        return false;
    };
    // `Output`'s equality is constant-time.
    hash(&hasher, password, salt).is_ok_and(|computed| computed == expected)
}

/// The hash output `PasswordHasher::hash_password` computes, with this
/// thread's reusable working memory.
fn hash(
    hasher: &Argon2<'_>,
    password: &str,
    salt: Salt<'_>,
) -> argon2::password_hash::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let params = hasher.params();
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = MEMORY.with_borrow_mut(|memory| {
        if memory.len() < params.block_count() {
            memory.resize(params.block_count(), Block::new());
        }
        let memory = &mut memory[..params.block_count()];
        Output::init_with(output_len, |out| {
            Ok(hasher.hash_password_into_with_memory(
                password.as_bytes(),
                salt_bytes,
                out,
                &mut *memory,
            )?)
        })
    })?;
    Ok(output)
}

/// A hash to verify against when the account does not exist, so that an
/// unknown name costs as long as a wrong password.
pub fn decoy_phc() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("natter decoy password").expect("hashing works"))
}

/// A new session token and the hash to keep.
pub fn new_token() -> (String, TokenHash) {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `secret` is one of `sessions`, comparing every hash in constant
/// time (no early exit on the first differing byte, nor on a match).
pub fn token_matches(secret: &str, sessions: &[TokenHash]) -> Option<TokenHash> {
    if !secret.starts_with(TOKEN_PREFIX) {
        return None;
    }
    let hash = token_hash(secret);
    let mut found = subtle::Choice::from(0);
    for session in sessions {
        found |= session.ct_eq(&hash);
    }
    bool::from(found).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsf", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(phc, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Data dirs written before the reusable memory hold hashes made by
        // the crate's own hasher; the crate must accept ours.
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let theirs = argon2()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", &theirs));
        assert!(!verify_password("wrong horse", &theirs));
        let ours = hash_password("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        // Other parameters (an older or stronger hash) verify too.
        let stronger = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32 * 1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"correct horse", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password("correct horse", &stronger));
        assert!(!verify_password("correct hors", &stronger));
    }

    #[test]
    fn tokens_are_long_random_and_only_match_their_hash() {
        let (token, hash) = new_token();
        let (other, other_hash) = new_token();
        assert_ne!(token, other);
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(token_matches(&token, &[other_hash, hash]), Some(hash));
        assert_eq!(token_matches(&token, &[other_hash]), None);
        assert_eq!(token_matches("password1", &[hash]), None);
    }
}
