//! TOTP (RFC 6238: SHA-1, six digits, 30-second steps, one step of skew either way) and
//! recovery codes.

use totp_rs::{Builder, Secret, Totp};
use unicode_normalization::UnicodeNormalization;

use crate::error::{AppError, AppResult};

/// How many recovery codes a setup hands out.
pub const RECOVERY_CODES: usize = 10;
/// Crockford-like alphabet without look-alikes (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// A new secret: 160 random bits, as RFC 4226 recommends, in base32.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes);
    Secret::new_stack(bytes).to_base32()
}

fn totp(secret: &str, issuer: &str, account: &str) -> AppResult<Totp> {
    const DAMAGED: &str = "a stored TOTP secret is damaged";
    let secret =
        Secret::try_from_base32(secret).map_err(|err| AppError::internal_from(DAMAGED, err))?;
    Builder::new()
        .with_secret(secret)
        .with_issuer(Some(issuer.to_owned()))
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|err| AppError::internal_from(DAMAGED, err))
}

/// The `otpauth://` URI an authenticator app scans, shown under `issuer`.
pub fn uri(secret: &str, issuer: &str, account: &str) -> AppResult<String> {
    totp(secret, issuer, account)?
        .to_url()
        .map_err(|err| AppError::internal_from("building a TOTP URI", err))
}

/// A code as typed, without what people and apps put between its digits (spaces: apps show
/// `123 456`, and a copied code keeps the space; dashes) and with full-width digits, as
/// Japanese and Chinese input methods type them, read as digits.
fn compact(code: &str) -> String {
    code.nfkc().filter(|c| !between_digits(*c)).collect()
}

/// Whether a code box holds anything a code is read from: one of spaces and dashes is as blank
/// as an empty one.
pub fn code_given(code: &str) -> bool {
    code.nfkc().any(|c| !between_digits(c))
}

fn between_digits(c: char) -> bool {
    c.is_whitespace() || c == '-'
}

/// The time step `code` belongs to when it is right for now or one step either side.
pub fn check(secret: &str, code: &str, unix_time: u64) -> AppResult<Option<i64>> {
    let code = compact(code);
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    Ok(totp(secret, "rollcall", "user")?
        .check(&code, unix_time)
        .and_then(|step| i64::try_from(step).ok()))
}

/// Whether `code` has the shape of a recovery code rather than a TOTP code.
pub fn is_recovery_code(code: &str) -> bool {
    compact(code).chars().count() > 6
}

/// Ten new recovery codes (`XXXX-XXXX-XXXX-XXXX`, 16 symbols drawn uniformly from 31: 79
/// random bits each) with their hashes.
pub fn new_recovery_codes() -> Vec<(String, String)> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: Vec<char> = (0..16)
                .map(|_| CODE_ALPHABET[rand::random_range(0..CODE_ALPHABET.len())] as char)
                .collect();
            let code = chars
                .chunks(4)
                .map(|chunk| chunk.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-");
            let hash = hash_recovery_code(&code);
            (code, hash)
        })
        .collect()
}

/// The stored form of a recovery code: SHA-256 of its letters, ignoring case and dashes. The
/// codes are random enough (79 bits) that a fast hash is safe.
pub fn hash_recovery_code(code: &str) -> String {
    let normal: String = code
        .nfkc()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    super::sha256_hex(normal)
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_the_current_and_adjacent_steps_pass() {
        let secret = new_secret();
        let t = totp(&secret, "rollcall", "alice").expect("totp");
        let now = 1_800_000_000;
        for (offset, ok) in [
            (-60i64, false),
            (-30, true),
            (0, true),
            (30, true),
            (60, false),
        ] {
            let code = t
                .generate(u64::try_from(now + offset).expect("time"))
                .to_string();
            assert_eq!(
                check(&secret, &code, now as u64).expect("check").is_some(),
                ok,
                "{offset}"
            );
        }
        assert_eq!(check(&secret, "12345", now as u64).expect("check"), None);
        // As typed: with a space or a dash in the middle, or in full-width digits.
        let code = t.generate(now as u64).to_string();
        let wide: String = code
            .chars()
            .map(|c| char::from_u32(u32::from(c) + 0xFEE0).expect("a full-width digit"))
            .collect();
        for typed in [
            format!("{} {}", &code[..3], &code[3..]),
            format!("{}-{}", &code[..3], &code[3..]),
            wide,
        ] {
            assert!(
                check(&secret, &typed, now as u64).expect("check").is_some(),
                "{typed}"
            );
            assert!(!is_recovery_code(&typed), "{typed}");
        }
        assert!(
            uri(&secret, "Example Co", "alice")
                .expect("uri")
                .starts_with("otpauth://totp/Example%20Co:alice?")
        );
    }

    #[test]
    fn a_box_of_separators_holds_no_code() {
        for blank in ["", " ", "\t", "-", " - ", "\u{3000}", "\u{FF0D}"] {
            assert!(!code_given(blank), "{blank:?}");
        }
        for given in ["1", " 1 ", "a-", "\u{FF11}"] {
            assert!(code_given(given), "{given:?}");
        }
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let (code, hash) = &codes[0];
        assert_eq!(code.len(), 19);
        assert!(is_recovery_code(code));
        assert_eq!(
            &hash_recovery_code(&code.to_lowercase().replace('-', "")),
            hash
        );
        let mut unique: Vec<_> = codes.iter().map(|(c, _)| c).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
    }
}
