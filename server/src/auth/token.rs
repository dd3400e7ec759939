//! `TokenRecord` and bearer tokens: how a token is made, named, stored and recognised.
//!
//! A token reads `coord_<id>_<secret>`: `id` is 16 lowercase hex digits (8 random bytes) that
//! name the token's record without naming its user, and `secret` is 64 lowercase hex digits
//! (32 random bytes).
//! Invariants:
//! - only the SHA-256 of the whole token string is ever stored (`sha256_hex`); the token itself
//!   exists only in the answer to whoever asked for it, so it never enters the Raft log, a
//!   snapshot or a log line;
//! - hashes are compared in constant time ([`constant_time_eq`]), so the time an answer takes
//!   says nothing about how much of a guessed secret was right; the id is not secret;
//! - a stored record is well formed ([`TokenRecord::validate`]), so lookups never meet a
//!   malformed id or hash.
//!
//! Randomness arrives as a `&dyn SecureRandom` (the system source in the server, a fixed one in
//! tests); this module reads no clock, the caller passes the creation time.

use ring::digest;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::error::PolicyError;

/// What every token starts with, so a leaked token is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "coord_";
/// Random bytes in a token id (shown as twice as many hex digits).
pub const TOKEN_ID_BYTES: usize = 8;
/// Random bytes in a token secret (shown as twice as many hex digits).
pub const TOKEN_SECRET_BYTES: usize = 32;
/// Longest token description, in bytes.
pub const TOKEN_DESCRIPTION_BYTES_MAX: usize = 256;

const TOKEN_ID_CHARS: usize = TOKEN_ID_BYTES * 2;
const TOKEN_SECRET_CHARS: usize = TOKEN_SECRET_BYTES * 2;
const SHA256_HEX_CHARS: usize = 64;
const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + TOKEN_ID_CHARS + 1 + TOKEN_SECRET_CHARS;

const _: () = assert!(TOKEN_SECRET_BYTES >= 32, "a secret must resist guessing");
const _: () = assert!(SHA256_HEX_CHARS == digest::SHA256_OUTPUT_LEN * 2);

/// What a policy keeps of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// 16 lowercase hex digits, unique in the policy; the token carries it in the clear.
    pub id: String,
    /// SHA-256 of the whole token string, as 64 lowercase hex digits.
    pub sha256_hex: String,
    /// When the token was issued (leader time, passed in by the caller).
    pub created_unix_ms: u64,
    /// Free text from whoever asked for the token, such as what it is for.
    #[serde(default)]
    pub description: String,
}

impl TokenRecord {
    /// Whether `token` is the token this record was made from (constant time in the secret).
    pub fn matches(&self, token: &str) -> bool {
        constant_time_eq(sha256_hex(token).as_bytes(), self.sha256_hex.as_bytes())
    }

    /// Checks that the record is well formed; `user` names its owner in the error.
    pub fn validate(&self, user: &str) -> Result<(), PolicyError> {
        let invalid = |reason: &'static str| PolicyError::InvalidTokenRecord {
            user: user.to_owned(),
            id: self.id.clone(),
            reason,
        };
        if !is_lower_hex(&self.id, TOKEN_ID_CHARS) {
            return Err(invalid("the id is not 16 lowercase hex digits"));
        }
        if !is_lower_hex(&self.sha256_hex, SHA256_HEX_CHARS) {
            return Err(invalid("the hash is not 64 lowercase hex digits"));
        }
        check_description(&self.description)
    }
}

/// Makes a new token and its record: draws the id and the secret from `random` and hashes the
/// whole token. The caller hands the token to the user once and stores only the record.
pub fn generate_token(
    random: &dyn SecureRandom,
    description: &str,
    now_unix_ms: u64,
) -> Result<(String, TokenRecord), PolicyError> {
    check_description(description)?;
    let mut id_bytes = [0u8; TOKEN_ID_BYTES];
    let mut secret_bytes = [0u8; TOKEN_SECRET_BYTES];
    random
        .fill(&mut id_bytes)
        .map_err(|_| PolicyError::RandomUnavailable)?;
    random
        .fill(&mut secret_bytes)
        .map_err(|_| PolicyError::RandomUnavailable)?;
    let id = lower_hex(&id_bytes);
    let token = format!("{TOKEN_PREFIX}{id}_{}", lower_hex(&secret_bytes));
    debug_assert_eq!(token.len(), TOKEN_CHARS);
    let record = TokenRecord {
        sha256_hex: sha256_hex(&token),
        id,
        created_unix_ms: now_unix_ms,
        description: description.to_owned(),
    };
    Ok((token, record))
}

/// The id a token names, or `None` if `token` does not have the shape of a Coord token.
pub fn token_id(token: &str) -> Option<&str> {
    if token.len() != TOKEN_CHARS {
        return None;
    }
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_at_checked(TOKEN_ID_CHARS)?;
    let secret = secret.strip_prefix('_')?;
    if is_lower_hex(id, TOKEN_ID_CHARS) && is_lower_hex(secret, TOKEN_SECRET_CHARS) {
        Some(id)
    } else {
        None
    }
}

/// Compares two byte strings in time that depends only on their lengths (which are public:
/// every stored hash has 64 digits), never on where they first differ.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |folded, (left_byte, right_byte)| {
            folded | (left_byte ^ right_byte)
        });
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

fn check_description(description: &str) -> Result<(), PolicyError> {
    if description.len() > TOKEN_DESCRIPTION_BYTES_MAX {
        return Err(PolicyError::DescriptionTooLong {
            bytes: description.len(),
            limit: TOKEN_DESCRIPTION_BYTES_MAX,
        });
    }
    Ok(())
}

fn sha256_hex(text: &str) -> String {
    lower_hex(digest::digest(&digest::SHA256, text.as_bytes()).as_ref())
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn is_lower_hex(text: &str, chars: usize) -> bool {
    text.len() == chars
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    #[allow(
        deprecated,
        reason = "ring seals SecureRandom, so its own fixed source is the only one a test can build"
    )]
    fn fixed_random(byte: u8) -> ring::test::rand::FixedByteRandom {
        ring::test::rand::FixedByteRandom { byte }
    }

    #[test]
    fn a_token_has_the_documented_shape_and_only_its_hash_is_kept() {
        let (token, record) = generate_token(&fixed_random(0xab), "ci deploys", 1_700).unwrap();
        let id = "ab".repeat(TOKEN_ID_BYTES);
        let secret = "ab".repeat(TOKEN_SECRET_BYTES);
        assert_eq!(token, format!("coord_{id}_{secret}"));
        assert_eq!(record.id, id);
        assert_eq!(record.created_unix_ms, 1_700);
        assert_eq!(record.description, "ci deploys");
        assert_eq!(record.sha256_hex, sha256_hex(&token));
        assert!(!record.sha256_hex.contains(&secret));
        assert_eq!(record.validate("alice"), Ok(()));
        assert_eq!(token_id(&token), Some(id.as_str()));
    }

    #[test]
    fn sha256_hex_matches_a_known_answer() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_record_matches_its_own_token_only() {
        let random = SystemRandom::new();
        let (token, record) = generate_token(&random, "", 0).unwrap();
        let (other_token, other_record) = generate_token(&random, "", 0).unwrap();
        assert_ne!(token, other_token);
        assert_ne!(record.id, other_record.id);
        assert!(record.matches(&token));
        assert!(!record.matches(&other_token));
        assert!(!other_record.matches(&token));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(!record.matches(&String::from_utf8(flipped).unwrap()));
        assert!(!record.matches(""));
    }

    #[test]
    fn token_id_refuses_anything_not_shaped_like_a_token() {
        let id = "0123456789abcdef";
        let secret = "f".repeat(TOKEN_SECRET_CHARS);
        assert_eq!(token_id(&format!("coord_{id}_{secret}")), Some(id));
        for bad in [
            String::new(),
            format!("coord_{id}_{secret}0"),
            format!("coord_{id}-{secret}"),
            format!("other_{id}_{secret}"),
            format!("coord_{}_{secret}", id.to_uppercase()),
            format!("coord_{id}_{}", "g".repeat(TOKEN_SECRET_CHARS)),
            format!("coord_{id}_{}é", "f".repeat(TOKEN_SECRET_CHARS - 2)),
        ] {
            assert_eq!(token_id(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn constant_time_eq_is_plain_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn records_and_descriptions_are_validated() {
        let (_, record) = generate_token(&fixed_random(0xab), "", 0).unwrap();
        let upper = TokenRecord {
            id: record.id.to_uppercase(),
            ..record.clone()
        };
        assert!(matches!(
            upper.validate("alice"),
            Err(PolicyError::InvalidTokenRecord { .. })
        ));
        let short_hash = TokenRecord {
            sha256_hex: "00".to_owned(),
            ..record.clone()
        };
        assert!(matches!(
            short_hash.validate("alice"),
            Err(PolicyError::InvalidTokenRecord { .. })
        ));
        let long = "d".repeat(TOKEN_DESCRIPTION_BYTES_MAX + 1);
        assert_eq!(
            generate_token(&fixed_random(1), &long, 0),
            Err(PolicyError::DescriptionTooLong {
                bytes: TOKEN_DESCRIPTION_BYTES_MAX + 1,
                limit: TOKEN_DESCRIPTION_BYTES_MAX
            })
        );
    }
}
