//! The generator's HTTP client: HTTP/1.1 on keep-alive connections, with
//! everything the requests share written once, and nothing done per
//! request that the gateway's answer does not need.
//!
//! The generator shares the machine with the system it measures, so every
//! microsecond it spends per request is one the system does not get. A
//! general-purpose client pays for generality on every request: reqwest
//! (which the generator used before) parses the URL, builds header maps,
//! serializes the body through `serde_json::Value` and runs its redirect,
//! decompression and pool layers; hyper, underneath, hands each request
//! to a connection task and the answer back through channels. Measured
//! against wrk on the bench's machine: reqwest (on the multi-threaded
//! runtime the generator had then) cost about 4 times wrk's CPU per
//! request, hyper's clients on the generator's own thread about 2.5 times,
//! this client about 1.5 times (BENCHMARKS.md, "What the load generator
//! costs").
//!
//! What it does, and all it does: a request is one buffer (the fixed head
//! prepared once, `content-length`, the body) written on an idle
//! connection from a stack of them, in one `write`; the answer is read into
//! the connection's buffer until httparse (hyper's own parser) has the
//! head and `content-length` says the body is in. The gateway answers
//! with a length, never chunked, so chunked answers are reported as errors
//! rather than handled.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Target;

/// Headers an answer may have; more is an error (the gateway sends five).
const MAX_HEADERS: usize = 32;

/// How long a connection may stay idle before the client closes it, as
/// real clients do (reqwest after 90 s, browsers after about a minute).
/// Without it, against a server that keeps idle connections, every
/// connection opened while requests piled up (in a latency spike, say)
/// stays open to the end of the run, and so does the server's memory for
/// it: a 10-minute soak of final at 300/s ended with 215 connections and
/// the gateway 6 MiB up (BENCHMARKS.md). The services of this repository
/// now close a connection idle for as long themselves
/// (`orders::http::HEADER_READ_TIMEOUT`); when one does so just before
/// the client reuses it, the request goes again on a new connection
/// ([`Failure::ClosedWhileIdle`]).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP/1.1 client for one gateway's `/orders`.
pub struct Client {
    address: SocketAddr,
    /// `POST /orders HTTP/1.1`, `host`, `authorization` and
    /// `content-type`, each line ended: all but the length and the body.
    post_head: Vec<u8>,
    /// `host` and `authorization`, for the `GET`s.
    get_headers: Vec<u8>,
    /// `/orders`.
    path: String,
    timeout: Duration,
    /// Open connections not in use, the last used on top. As many are
    /// opened as requests are in flight at once; each is reused until the
    /// server closes it or it has been idle for [`IDLE_TIMEOUT`].
    idle: Mutex<Vec<Connection>>,
}

/// What came back: the status and the whole body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Why an exchange failed: the kinds the report counts, and one that
/// deserves a second try.
enum Failure {
    /// A reused connection was closed before any answer: the server closes
    /// keep-alive connections that stay idle, so this one is retried once
    /// on a new connection.
    ClosedWhileIdle,
    Kind(&'static str),
}

impl Client {
    /// A client for `target`, each request abandoned after `timeout`. The
    /// host name is resolved here, once (this blocks on the resolver).
    /// Errors: a URL that is not `http://host[:port]/path`, a host that
    /// does not resolve, or an `Authorization` value with a line break.
    pub fn new(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        let url = &target.orders_url;
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("{url} is not an http:// URL (the generator speaks plain HTTP/1.1)")
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        }
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
        let authorization = &target.authorization;
        ensure!(
            !authorization.contains(['\r', '\n']),
            "the Authorization value has a line break"
        );
        let get_headers = format!("host: {authority}\r\nauthorization: {authorization}\r\n");
        let post_head =
            format!("POST {path} HTTP/1.1\r\n{get_headers}content-type: application/json\r\n");
        Ok(Self {
            address,
            post_head: post_head.into_bytes(),
            get_headers: get_headers.into_bytes(),
            path: path.to_owned(),
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `POST /orders` with `body` (JSON). Errors: the kind of failure when
    /// no answer came, as the report counts them: `"timeout"`,
    /// `"connect error"` or `"transport error"`.
    pub async fn post_order(&self, body: &[u8]) -> Result<Answer, String> {
        let mut request = Vec::with_capacity(self.post_head.len() + 24 + body.len());
        request.extend_from_slice(&self.post_head);
        let _ = write!(request, "content-length: {}\r\n\r\n", body.len());
        request.extend_from_slice(body);
        self.send(&request).await
    }

    /// `GET /orders/{id}`. Errors: as for [`Client::post_order`].
    pub async fn get_order(&self, id: &str) -> Result<Answer, String> {
        let mut request = format!("GET {}/{id} HTTP/1.1\r\n", self.path).into_bytes();
        request.extend_from_slice(&self.get_headers);
        request.extend_from_slice(b"\r\n");
        self.send(&request).await
    }

    /// Sends `request` on an idle connection, or a new one, within the
    /// timeout.
    async fn send(&self, request: &[u8]) -> Result<Answer, String> {
        let exchange = async {
            let idle = self.idle.lock().unwrap().pop();
            if let Some(connection) = idle {
                match self.exchange(connection, request).await {
                    Err(Failure::ClosedWhileIdle) => {}
                    Err(Failure::Kind(kind)) => return Err(kind),
                    Ok(answer) => return Ok(answer),
                }
            }
            let connection = Connection::open(self.address).await?;
            self.exchange(connection, request)
                .await
                .map_err(|failure| match failure {
                    Failure::ClosedWhileIdle => "transport error",
                    Failure::Kind(kind) => kind,
                })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer.map_err(str::to_owned),
            Err(_) => Err("timeout".to_owned()),
        }
    }

    /// One request and its answer on `connection`, which goes back on the
    /// idle stack afterwards unless the server said it closes it. The
    /// connections idle for longer than [`IDLE_TIMEOUT`] are closed then:
    /// they are at the bottom, since the stack is in the order of use.
    async fn exchange(
        &self,
        mut connection: Connection,
        request: &[u8],
    ) -> Result<Answer, Failure> {
        let (answer, keep_alive) = connection.exchange(request).await?;
        if keep_alive {
            let now = Instant::now();
            connection.idle_since = now;
            let mut idle = self.idle.lock().unwrap();
            let expired = idle
                .iter()
                .take_while(|old| now.duration_since(old.idle_since) > IDLE_TIMEOUT)
                .count();
            idle.drain(..expired);
            idle.push(connection);
        }
        Ok(answer)
    }
}

/// One keep-alive connection and what has been read from it.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// When it last went back on the idle stack.
    idle_since: Instant,
}

impl Connection {
    async fn open(address: SocketAddr) -> Result<Self, &'static str> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|_| "connect error")?;
        // Each request is written whole; Nagle's algorithm would only hold
        // the next one back.
        stream.set_nodelay(true).map_err(|_| "connect error")?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(1024),
            idle_since: Instant::now(),
        })
    }

    /// Writes `request` and reads its answer; with it, whether the
    /// connection stays open.
    async fn exchange(&mut self, request: &[u8]) -> Result<(Answer, bool), Failure> {
        self.buffer.clear();
        if self.stream.write_all(request).await.is_err() {
            return Err(Failure::ClosedWhileIdle);
        }
        loop {
            if let Some(head) = parse_head(&self.buffer).map_err(Failure::Kind)? {
                let end = head.length + head.body;
                if self.buffer.len() >= end {
                    let body = Bytes::copy_from_slice(&self.buffer[head.length..end]);
                    let answer = Answer {
                        status: head.status,
                        body,
                    };
                    return Ok((answer, head.keep_alive));
                }
            }
            if self.buffer.capacity() - self.buffer.len() < 512 {
                self.buffer.reserve(4096);
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) if self.buffer.is_empty() => return Err(Failure::ClosedWhileIdle),
                Ok(0) | Err(_) => return Err(Failure::Kind("transport error")),
                Ok(_) => {}
            }
        }
    }
}

/// The head of an answer, as far as this client reads it.
#[derive(Debug, PartialEq)]
struct Head {
    /// Its length in bytes, the blank line included.
    length: usize,
    status: u16,
    /// The body's length in bytes.
    body: usize,
    /// HTTP/1.1 without `connection: close`.
    keep_alive: bool,
}

/// Reads the head of the answer at the start of `buffer`: `None` while it
/// is incomplete. Errors (`"transport error"`): a head that is not HTTP, a
/// chunked body or one without a length (which this client does not read).
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, &'static str> {
    let invalid = "transport error";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid),
    };
    let status = response.code.ok_or(invalid)?;
    let mut body = None;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).map_err(|_| invalid)?;
            body = Some(value.trim().parse().map_err(|_| invalid)?);
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep_alive &= !header.value.eq_ignore_ascii_case(b"close");
        }
    }
    // 204 and 304 have no body; every other answer must say how long it is.
    let body = match (body, status) {
        (Some(body), _) => body,
        (None, 204 | 304) => 0,
        (None, _) => return Err(invalid),
    };
    Ok(Some(Head {
        length,
        status,
        body,
        keep_alive,
    }))
}

/// The JSON order of request `i`: user `load_user_<i mod 10000>`, the
/// products in turn, quantity 1. Written straight into one buffer (JSON
/// escaping is not needed: the user id is ASCII digits and the products
/// are checked by [`json_safe`]).
pub fn order_body(i: u64, products: &[String]) -> Bytes {
    use std::io::Write;
    let product = &products[(i % products.len() as u64) as usize];
    let mut body = Vec::with_capacity(64 + product.len());
    let _ = write!(
        body,
        r#"{{"user_id":"load_user_{}","product_id":"{product}","quantity":1}}"#,
        i % 10_000
    );
    Bytes::from(body)
}

/// Whether `text` can go between JSON quotes as it is: no quote, backslash
/// or control character.
pub fn json_safe(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback that answers every request on every connection
    /// with an empty 200, and says how many of its connections the client
    /// has closed.
    async fn answering_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(1..) = stream.read(&mut buffer).await {
                        // This client sends a request only once the last
                        // one is answered, and a GET fits in one read.
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                    let _ = closed.send(());
                });
            }
        });
        (address, closes)
    }

    #[tokio::test]
    async fn connections_idle_for_longer_than_the_timeout_are_closed() {
        let (address, mut closes) = answering_server().await;
        let target = Target {
            orders_url: format!("http://{address}/orders"),
            authorization: "Bearer t".to_owned(),
            products: Vec::new(),
        };
        let client = Client::new(&target, Duration::from_secs(5)).unwrap();
        // Three requests at once open three connections, which then wait
        // on the idle stack.
        let (a, b, c) = tokio::join!(
            client.get_order("1"),
            client.get_order("2"),
            client.get_order("3")
        );
        for answer in [a, b, c] {
            assert_eq!(answer.unwrap().status, 200);
        }
        // Make them as old as a timeout and then some, rather than wait.
        {
            let mut idle = client.idle.lock().unwrap();
            assert_eq!(idle.len(), 3);
            let long_ago = Instant::now()
                .checked_sub(IDLE_TIMEOUT + Duration::from_secs(1))
                .expect("the clock has run for longer than a timeout");
            for connection in idle.iter_mut() {
                connection.idle_since = long_ago;
            }
        }
        // The next request reuses the last one; when it goes back, the two
        // below it have been idle for longer than the timeout.
        assert_eq!(client.get_order("4").await.unwrap().status, 200);
        assert_eq!(client.idle.lock().unwrap().len(), 1);
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), closes.recv())
                .await
                .expect("the server sees two connections closed within 5 s");
        }
    }

    #[test]
    fn an_answer_is_complete_when_its_head_and_length_are_in() {
        let answer = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                       Content-Length: 11\r\n\r\n{\"order\":1}";
        let head = parse_head(answer).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                length: answer.len() - 11,
                status: 201,
                body: 11,
                keep_alive: true,
            }
        );
        // Half a head is not an answer yet.
        assert_eq!(parse_head(&answer[..30]), Ok(None));
        assert_eq!(parse_head(b""), Ok(None));
    }

    #[test]
    fn heads_this_client_cannot_read_are_errors_and_close_is_seen() {
        let close =
            parse_head(b"HTTP/1.1 503 Busy\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n");
        assert!(!close.unwrap().unwrap().keep_alive);
        let old = parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!old.unwrap().unwrap().keep_alive);
        let empty = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(empty.unwrap().unwrap().body, 0);
        for bad in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Err("transport error"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn order_bodies_are_the_json_the_gateway_expects() {
        let products = ["A001".to_owned(), "B042".to_owned()];
        let body = order_body(10_003, &products);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "user_id": "load_user_3",
                "product_id": "B042",
                "quantity": 1,
            })
        );
        let first: serde_json::Value = serde_json::from_slice(&order_body(0, &products)).unwrap();
        assert_eq!(first["product_id"], "A001");
        assert!(json_safe("A001"));
        assert!(!json_safe("A\"1"));
        assert!(!json_safe("A\\1"));
        assert!(!json_safe("A\n1"));
    }
}
