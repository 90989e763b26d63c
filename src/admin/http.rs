//! A deliberately small HTTP/1.1 server and client for the admin endpoint: GET and HEAD on a
//! handful of paths, one request per connection (`Connection: close`), bounded request heads
//! and timeouts. Probes, Prometheus and `slotway status` need no more, and it keeps a full HTTP
//! stack out of the proxy's dependencies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request head accepted.
const MAX_HEAD: usize = 8 << 10;
/// Time a client gets to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body the client reads.
const MAX_BODY: usize = 64 << 20;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path without the query string.
    pub path: String,
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type header value.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent no complete request head in time.
    #[error("request head not received within the timeout")]
    Timeout,
    /// The request head is malformed or too large.
    #[error("bad request: {0}")]
    Bad(&'static str),
}

/// Reads one request head from `stream`.
pub async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<Request, HttpError> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(HttpError::Bad(
                    "connection closed before the request head ended",
                ));
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(());
            }
            if head.len() > MAX_HEAD {
                return Err(HttpError::Bad("request head too large"));
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| HttpError::Timeout)??;
    parse_request_line(&head)
}

/// Parses `METHOD target HTTP/x.y` from the head's first line.
pub fn parse_request_line(head: &[u8]) -> Result<Request, HttpError> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(HttpError::Bad("no request line"))?;
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| HttpError::Bad("request line is not UTF-8"))?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Bad("unsupported HTTP version"));
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

/// Writes `resp` (without a body for HEAD) and closes the write side.
pub async fn write_response<S: AsyncWriteExt + Unpin>(
    stream: &mut S,
    resp: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&resp.body).await?;
    }
    stream.flush().await?;
    stream.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address could not be resolved or reached, or the connection failed.
    #[error("{addr}: {source}")]
    Io {
        /// The address asked.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("{0}: not an HTTP response")]
    NotHttp(String),
}

/// A blocking `GET http://addr/path`; returns the status and body.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), ClientError> {
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::other("no address")))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_BODY as u64).read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).ok_or_else(|| ClientError::NotHttp(addr.to_string()))
}

/// Splits a `Connection: close` response into status and body.
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .get(2..)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some((
        status,
        String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let r = parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert!(parse_request_line(b"GET /\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET / HTTP/2\r\n\r\n").is_err());
    }

    #[test]
    fn responses() {
        let (status, body) =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nno topology").unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, "no topology");
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn round_trip_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let req = read_request(&mut s).await.unwrap();
            let resp = Response::text(200, format!("you asked {}", req.path));
            write_response(&mut s, &resp, false).await.unwrap();
        });
        let got = tokio::task::spawn_blocking(move || get(&addr, "/healthz", READ_TIMEOUT))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (200, "you asked /healthz".to_string()));
    }
}
