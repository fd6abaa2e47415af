//! Buffers of HTTP bodies that carry key material (data keys, released
//! keys, new tokens, detokenized values), wiped when they are dropped.
//!
//! What this covers and what it cannot: the coordinator serializes such an
//! answer into one exactly sized buffer that is wiped once hyper has sent
//! it ([`secret_json`], [`SecretJson`]); the client reads every answer into
//! a buffer that never leaves an unwiped copy behind when it grows
//! ([`WipingBuf`]) and wipes each received chunk it holds alone. Copies
//! inside hyper's and rustls's own read and write buffers are outside
//! twinseal's reach (they are reused for the next bytes of the connection,
//! not wiped); ARCHITECTURE.md says so.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

/// Counts the bytes written to it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as JSON in one buffer of exactly its length (serialized twice:
/// once to count, once to write, so that no reallocation leaves a copy
/// behind), wiped when dropped.
pub fn secret_json<T: Serialize>(value: &T) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *buf, value)?;
    debug_assert_eq!(buf.len(), count.0);
    Ok(buf)
}

/// A JSON answer carrying key material: its body is a [`secret_json`]
/// buffer, wiped when hyper has sent it and dropped its last reference.
pub struct SecretJson<T>(pub T);

impl<T: Serialize> IntoResponse for SecretJson<T> {
    fn into_response(self) -> Response {
        match secret_json(&self.0) {
            Ok(buf) => (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from(bytes::Bytes::from_owner(buf)),
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "serializing an answer failed");
                crate::json::error_response(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    twinseal_api::error_type::INTERNAL,
                    "internal error (see the server's log)",
                )
            }
        }
    }
}

/// A growing byte buffer that wipes what it held: when it needs more room
/// it moves into a new allocation and wipes the old one, and it wipes its
/// last allocation when dropped.
#[derive(Default)]
pub struct WipingBuf(Zeroizing<Vec<u8>>);

impl WipingBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        WipingBuf(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// Append `bytes`.
    pub fn extend(&mut self, bytes: &[u8]) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * self.0.capacity())));
            bigger.extend_from_slice(&self.0);
            // The old allocation is wiped as `Zeroizing` drops it.
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }

    /// The bytes so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Bytes that can be appended without moving.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// Wipe a received chunk if nothing else refers to its memory (a chunk
/// that shares hyper's read buffer is left to hyper, which reuses it).
/// Returns whether it was wiped.
pub fn wipe_chunk(chunk: bytes::Bytes) -> bool {
    match chunk.try_into_mut() {
        Ok(mut owned) => {
            owned.as_mut().zeroize();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_json_is_exactly_sized_and_equals_plain_json() {
        let value = serde_json::json!({
            "key": "c2VjcmV0IGtleSBtYXRlcmlhbCBvZiB0aGlydHktdHdvIGJ5dGVz",
            "wrapped": "x".repeat(3000),
            "n": 7,
        });
        let buf = secret_json(&value).unwrap();
        assert_eq!(&buf[..], &serde_json::to_vec(&value).unwrap()[..]);
        // One allocation of exactly the answer's size: the serializer never
        // grew it (which would have freed an unwiped copy).
        assert_eq!(buf.capacity(), buf.len());
    }

    #[tokio::test]
    async fn secret_json_response_is_json_with_the_value() {
        let response = SecretJson(serde_json::json!({"token": "abc"})).into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"token":"abc"}"#);
    }

    #[test]
    fn wiping_buf_keeps_content_across_growth_without_realloc_in_place() {
        let mut buf = WipingBuf::with_capacity(4);
        let mut expected = Vec::new();
        let mut capacities = Vec::new();
        for i in 0..100u8 {
            let chunk = vec![i; (i as usize % 7) + 1];
            let before = buf.as_slice().as_ptr();
            let cap_before = buf.capacity();
            buf.extend(&chunk);
            expected.extend_from_slice(&chunk);
            if buf.capacity() != cap_before {
                // Growth moved to a new allocation made by us (the old one is
                // wiped on drop), never a `Vec` reallocation in place.
                assert_ne!(buf.as_slice().as_ptr(), before);
                capacities.push(buf.capacity());
            }
        }
        assert_eq!(buf.as_slice(), &expected[..]);
        assert!(capacities.len() < 10, "growth doubles: {capacities:?}");
    }

    #[test]
    fn a_chunk_held_alone_is_wiped_a_shared_one_is_not() {
        let alone = bytes::Bytes::from(vec![7u8; 64]);
        assert!(wipe_chunk(alone));
        let shared = bytes::Bytes::from(vec![7u8; 64]);
        let other = shared.clone();
        assert!(!wipe_chunk(shared));
        assert_eq!(&other[..], &[7u8; 64][..]);
    }
}
