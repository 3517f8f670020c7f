//! Feed cursors: which page of which feed session comes next, signed so that a client can
//! neither forge nor alter one, and bound to the tenant and user it was issued for. Opaque to
//! clients: `s`, `<page><issued>` in hex, the session id, a dot, then the first 16 bytes of
//! the HMAC-SHA256 over tenant, user and that payload.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::error::ApiError;

/// Where a cursor points: a session's page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The request id of the session's first page (whose items the served-feed log keeps).
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
/// The layout's mark, then page and issue time in hex.
const HEADER: usize = 1 + 8 + 16;
/// Request ids are at most this long (`domain::ids::MAX_ID_LEN`).
const MAX_SESSION: usize = 128;
/// Cursors issued before sessions were named by request ids: `<16 hex session><page><issued>`.
/// Still read (all hex, no mark), so that a rolling update does not break the pages users are on.
const LEGACY_PAYLOAD: usize = 16 + 8 + 16;

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
            "s{:08x}{:016x}{}",
            cursor.page, cursor.issued, cursor.session
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
        let (payload, tag) = text.rsplit_once('.').ok_or_else(invalid)?;
        if !(HEADER < payload.len() && payload.len() <= HEADER + MAX_SESSION)
            || tag.len() != 2 * MAC_BYTES
            || !payload.is_ascii()
        {
            return Err(invalid());
        }
        let tag = hex::decode(tag).map_err(|_| invalid())?;
        self.mac(tenant, user, payload)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        let (session, header) = match payload.strip_prefix('s') {
            Some(rest) => (&rest[HEADER - 1..], &rest[..HEADER - 1]),
            None if payload.len() == LEGACY_PAYLOAD => (&payload[..16], &payload[16..]),
            None => return Err(invalid()),
        };
        let cursor = Cursor {
            session: session.to_owned(),
            page: u32::from_str_radix(&header[..8], 16).map_err(|_| invalid())?,
            issued: u64::from_str_radix(&header[8..], 16).map_err(|_| invalid())?,
        };
        if now.saturating_sub(cursor.issued) > self.ttl_seconds {
            return Err(ApiError::invalid(
                "cursor has expired: request the first page again without it",
            ));
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_verifies_only_unaltered_for_its_feed_and_in_time() {
        let key = CursorKey::new("secret", 60);
        let cursor = Cursor {
            session: "0123456789abcdef".into(),
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

    #[test]
    fn a_session_is_named_by_any_request_id_and_old_cursors_still_read() {
        let key = CursorKey::new("secret", 60);
        for session in [
            "0123456789abcdef",
            "5f0c0d2e-8d5b-4b8e-9c1e-2f6a7b8c9d0e",
            "a.b",
        ] {
            let cursor = Cursor {
                session: session.into(),
                page: 3,
                issued: 1_000,
            };
            let text = key.sign("shop", "u1", &cursor);
            assert_eq!(key.verify("shop", "u1", &text, 1_001).unwrap(), cursor);
        }
        // The layout before: `<session><page><issued>`, all hex.
        let payload = format!("{}{:08x}{:016x}", "0123456789abcdef", 2, 1_000);
        let tag = key.mac("shop", "u1", &payload).finalize().into_bytes();
        let old = format!("{payload}.{}", hex::encode(&tag[..MAC_BYTES]));
        let read = key.verify("shop", "u1", &old, 1_001).unwrap();
        assert_eq!((read.session.as_str(), read.page), ("0123456789abcdef", 2));
    }
}
