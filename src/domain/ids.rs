//! Identifier rules shared by the API, the config and the store's key layout.

/// Longest identifier (user, item, tenant) accepted anywhere.
pub const MAX_ID_LEN: usize = 128;

/// 1–128 characters of `[A-Za-z0-9_.:-]`: safe in URLs, log lines and store keys.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `Ok` for a valid id, else the one message every caller shows for `field`.
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(format!(
            "{field} must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9_.:-]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_only() {
        assert!(is_valid_id("u42"));
        assert!(is_valid_id("shop:user_1.a-b"));
        assert!(is_valid_id(&"x".repeat(128)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("ü"));
    }
}
