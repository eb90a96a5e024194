//! HTTP plumbing: serving an axum router until shutdown, and reading the
//! `Idempotency-Key` header.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::domain::{InvalidOrder, validate_id};
use tokio_util::sync::CancellationToken;

/// How long a connection may take to send the head of its next request,
/// counted from when the server starts waiting for it: a kept-alive
/// connection's idle time included. After it, the connection is closed.
/// 30 s is hyper's default, which it applies only with a timer, and
/// `axum::serve` sets none: without this, a client that connects and sends
/// nothing, or a byte a minute, keeps its connection (about 30 KiB in the
/// gateway) for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `addr` until `shutdown` fires, then lets in-flight
/// requests finish.
///
/// Errors: the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    serve_listener(
        listener,
        router,
        shutdown.cancelled_owned(),
        HEADER_READ_TIMEOUT,
    )
    .await;
    Ok(())
}

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` completes;
/// then stops accepting, lets the requests in flight finish and closes the
/// idle connections. A connection that sends no request head for
/// `header_timeout` is closed (see [`HEADER_READ_TIMEOUT`]).
///
/// What `axum::serve` does, with the timer it lacks, and without HTTP/2
/// over plain TCP: telling the two apart means waiting for a connection's
/// first bytes, a wait no timeout covers, and the clients of these ports
/// (curl, browsers, Prometheus) speak HTTP/1.1 without TLS. A failed
/// `accept` (a connection reset before it was taken, or no file descriptor
/// left) is dropped or, for the latter, logged and waited out for a second,
/// as axum does.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    waited_out_accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connections.watch(connection));
    }
    drop(listener);
    connections.shutdown().await;
}

/// After a failed `accept`: an error of that one connection is dropped; any
/// other (out of file descriptors, most often) is logged and waited out
/// for a second, so that the loop does not spin while nothing can succeed.
async fn waited_out_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
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

    /// The `GET /slow` handler says when it has started, and answers once
    /// released.
    #[derive(Clone, Default)]
    struct Gate {
        entered: std::sync::Arc<tokio::sync::Notify>,
        release: std::sync::Arc<tokio::sync::Notify>,
    }

    /// A server on a free loopback port, serving `GET /` ("ok") and `GET
    /// /slow` (through `gate`), with a header timeout of `header_timeout`,
    /// until the returned token is cancelled.
    async fn server(
        header_timeout: Duration,
        gate: Gate,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let slow = move || {
            let gate = gate.clone();
            async move {
                gate.entered.notify_one();
                gate.release.notified().await;
                "done"
            }
        };
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route("/slow", axum::routing::get(slow));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve_listener(
            listener,
            router,
            stop.clone().cancelled_owned(),
            header_timeout,
        ));
        (addr, stop, served)
    }

    /// Reads until the server closes the connection (end of stream, or a
    /// reset), and returns what it sent; fails after `deadline`.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream, deadline: Duration) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut received = Vec::new();
        let read = tokio::time::timeout(deadline, async {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server kept the connection open");
        String::from_utf8_lossy(&received).into_owned()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

    #[tokio::test]
    async fn a_connection_that_sends_no_request_is_closed_after_the_header_timeout() {
        let (addr, stop, _served) = server(Duration::from_millis(200), Default::default()).await;

        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            read_until_closed(&mut silent, Duration::from_secs(10)).await,
            ""
        );

        // A trickle of bytes that never completes a head is closed as well.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        read_until_closed(&mut slow, Duration::from_secs(10)).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_served_then_closed_once_idle_for_the_header_timeout() {
        let (addr, stop, _served) = server(Duration::from_millis(200), Default::default()).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, GET)
            .await
            .unwrap();

        let received = read_until_closed(&mut client, Duration::from_secs(10)).await;
        assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
        assert!(received.ends_with("ok"), "{received}");
        stop.cancel();
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_finishes_the_request_in_flight() {
        let gate = Gate::default();
        let (addr, stop, served) = server(HEADER_READ_TIMEOUT, gate.clone()).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let slow = b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut client, slow)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), gate.entered.notified())
            .await
            .expect("the request reached its handler");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the listener is closed once the shutdown starts");
        assert!(!served.is_finished(), "the request in flight is waited for");

        gate.release.notify_one();
        let received = read_until_closed(&mut client, Duration::from_secs(10)).await;
        assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
        assert!(received.ends_with("done"), "{received}");
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the server ends once its connections are done")
            .unwrap();
    }
}
