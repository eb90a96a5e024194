//! HTTP plumbing: serving an axum router until shutdown, and reading the
//! `Idempotency-Key` header.

use std::net::SocketAddr;

use axum::Router;

use crate::domain::{InvalidOrder, validate_id};
use tokio_util::sync::CancellationToken;

/// Serves `router` on `addr` until `shutdown` fires, then lets in-flight
/// requests finish.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// The header a client sends so that a retry of `POST /orders` (after a
/// 503 or a 504, say) gets the order its first attempt stored, instead of a
/// second one (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The client's `Idempotency-Key`, if it sent one, checked like the order's
/// ids (see [`crate::domain::validate_id`]): a key a client may choose, a
/// UUID for instance.
///
/// Errors: the header is sent twice, is not visible ASCII or UTF-8, or is
/// not a valid id (empty, too long, control or invisible characters).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, InvalidOrder> {
    let field = "Idempotency-Key";
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |reason: &str| InvalidOrder {
        field,
        reason: reason.to_owned(),
    };
    if values.next().is_some() {
        return Err(invalid("must be sent once"));
    }
    let key = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid("must be UTF-8"))?;
    validate_id(field, key)?;
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn a_key_is_read_once_and_checked_like_an_id() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("8e03978e-40d5"));
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("8e03978e-40d5")
        );

        let long = "k".repeat(crate::domain::MAX_ID_CHARS + 1);
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_str(&long).unwrap(),
            HeaderValue::from_bytes(b"a\xff").unwrap(),
            HeaderValue::from_bytes("a\u{200b}".as_bytes()).unwrap(),
        ] {
            headers.insert(IDEMPOTENCY_KEY, bad.clone());
            assert!(idempotency_key(&headers).is_err(), "{bad:?}");
        }
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("one"));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("two"));
        assert!(idempotency_key(&headers).is_err(), "sent twice");
    }
}
