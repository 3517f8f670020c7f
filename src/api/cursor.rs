//! Feed cursors: which page of which feed session comes next, signed so that a client can
//! neither forge nor alter one, and bound to the tenant and user it was issued for. Opaque to
//! clients: `<session><page><issued>` in hex, a dot, then the first 16 bytes of the
//! HMAC-SHA256 over tenant, user and that payload.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::error::ApiError;

/// Where a cursor points: a session's page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// 16 hex digits.
    pub session: String,
    /// 1-based.
    pub page: u32,
    /// Unix seconds when it was issued.
    pub issued: u64,
}

pub struct CursorKey {
    /// The HMAC keyed once: each cursor clones it rather than hashing the key again.
    keyed: Hmac<Sha256>,
    /// A cursor older than this is refused (its session is gone too).
    ttl_seconds: u64,
}

const MAC_BYTES: usize = 16;

impl CursorKey {
    /// `secret` empty: a random key (cursors then work only on this process).
    pub fn new(secret: &str, ttl_seconds: u64) -> Self {
        let key = if secret.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            secret.as_bytes().to_vec()
        };
        Self {
            keyed: Hmac::<Sha256>::new_from_slice(&key).expect("any key length"),
            ttl_seconds,
        }
    }

    fn mac(&self, tenant: &str, user: &str, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        // Lengths first: ("ab", "c") and ("a", "bc") must not sign alike.
        for part in [tenant, user, payload] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    pub fn sign(&self, tenant: &str, user: &str, cursor: &Cursor) -> String {
        let payload = format!(
            "{}{:08x}{:016x}",
            cursor.session, cursor.page, cursor.issued
        );
        let tag = self.mac(tenant, user, &payload).finalize().into_bytes();
        format!("{payload}.{}", hex::encode(&tag[..MAC_BYTES]))
    }

    /// The cursor `text` names, if this service issued it for `tenant` and `user` and it has
    /// not expired at `now` (Unix seconds); else 400 `invalid_argument`.
    pub fn verify(
        &self,
        tenant: &str,
        user: &str,
        text: &str,
        now: u64,
    ) -> Result<Cursor, ApiError> {
        let invalid = || {
            ApiError::invalid(
                "cursor is not valid for this feed: request the first page again without it",
            )
        };
        let (payload, tag) = text.split_once('.').ok_or_else(invalid)?;
        if payload.len() != 40 || tag.len() != 2 * MAC_BYTES || !payload.is_ascii() {
            return Err(invalid());
        }
        let tag = hex::decode(tag).map_err(|_| invalid())?;
        self.mac(tenant, user, payload)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        let cursor = Cursor {
            session: payload[..16].to_owned(),
            page: u32::from_str_radix(&payload[16..24], 16).map_err(|_| invalid())?,
            issued: u64::from_str_radix(&payload[24..], 16).map_err(|_| invalid())?,
        };
        if now.saturating_sub(cursor.issued) > self.ttl_seconds {
            return Err(ApiError::invalid(
                "cursor has expired: request the first page again without it",
            ));
        }
        Ok(cursor)
    }
}

/// A new session's id: 64 random bits.
pub fn new_session() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_verifies_only_unaltered_for_its_feed_and_in_time() {
        let key = CursorKey::new("secret", 60);
        let cursor = Cursor {
            session: new_session(),
            page: 2,
            issued: 1_000,
        };
        let text = key.sign("shop", "u1", &cursor);
        assert_eq!(key.verify("shop", "u1", &text, 1_030).unwrap(), cursor);
        assert!(
            key.verify("shop", "u2", &text, 1_030).is_err(),
            "another user"
        );
        assert!(
            key.verify("other", "u1", &text, 1_030).is_err(),
            "another tenant"
        );
        let expired = key.verify("shop", "u1", &text, 1_061).unwrap_err();
        assert!(expired.to_string().contains("expired"));
        // Every single-character change of the cursor is refused.
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered != text {
                assert!(
                    key.verify("shop", "u1", &altered, 1_030).is_err(),
                    "{altered}"
                );
            }
        }
        assert!(
            CursorKey::new("other secret", 60)
                .verify("shop", "u1", &text, 1_030)
                .is_err()
        );
        assert!(key.verify("shop", "u1", "garbage", 1_030).is_err());
    }
}
