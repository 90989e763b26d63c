//! The client side: the TLS handshake on accept, and [`ClientStream`], the socket a session
//! reads and writes, plaintext or TLS.
//!
//! A session drives its socket by readiness (`readable`, `try_read_buf`, `writable`,
//! `try_write`) so that one read drains every complete request and one write flushes every
//! ready reply. [`ClientStream`] offers exactly that interface for both kinds: plaintext calls
//! go straight to the `TcpStream` (one enum match, no boxing per read), and TLS ones run
//! rustls' synchronous record layer over the socket's non-blocking `try_read`/`try_write`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use rustls::{ServerConfig, ServerConnection};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Read chunk reserved when a caller hands over a full buffer.
const READ_RESERVE: usize = 16 << 10;
/// Most plaintext one read hands over: the spare capacity up to here is zeroed per read, and a
/// buffer left large by one big request must not cost a large memset on every read after.
const READ_WINDOW: usize = 256 << 10;
/// First byte of a TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a plaintext client on the TLS port is told before the connection closes.
const PLAINTEXT_REFUSED: &[u8] = b"-ERR slotway: this port requires TLS\r\n";

/// The listener's TLS settings: the current rustls config (swapped on reload) and the
/// handshake budget.
#[derive(Debug)]
pub struct ClientTls {
    pub(crate) config: Arc<ArcSwap<ServerConfig>>,
    pub(crate) handshake_timeout: Duration,
}

/// A client connection, plaintext or TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// A plain TCP connection.
    Plain(TcpStream),
    /// A TLS connection whose handshake has completed.
    Tls(Box<ServerTls>),
}

/// Accepts `tcp` as a client: plaintext without `tls`, else after a TLS handshake within the
/// configured budget. `None` when the handshake failed (counted, logged at debug) or the
/// client left without a word (a TCP health check: not counted).
pub async fn accept(tls: Option<&ClientTls>, tcp: TcpStream) -> Option<ClientStream> {
    let Some(tls) = tls else {
        return Some(ClientStream::Plain(tcp));
    };
    let peer = tcp.peer_addr().ok();
    match tokio::time::timeout(tls.handshake_timeout, handshake(tls, tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            super::count_handshake_failure("client");
            tracing::debug!(?peer, error = %e, "client TLS handshake failed");
            None
        }
        Err(_) => {
            super::count_handshake_failure("client");
            tracing::debug!(?peer, "client TLS handshake timed out");
            None
        }
    }
}

async fn handshake(tls: &ClientTls, mut tcp: TcpStream) -> io::Result<Option<ClientStream>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        // A plaintext RESP client: say why instead of answering with a TLS alert it cannot read.
        let _ = tcp.write_all(PLAINTEXT_REFUSED).await;
        let _ = tcp.shutdown().await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plaintext client on the TLS port",
        ));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.load_full());
    let (tcp, conn) = acceptor.accept(tcp).await?.into_inner();
    Ok(Some(ClientStream::Tls(Box::new(ServerTls {
        tcp,
        conn,
        // The handshake may have read the client's first requests along with its Finished
        // message (TLS 1.3 clients send both in one flight).
        buffered: true,
        eof: false,
        accepted: 0,
    }))))
}

impl ClientStream {
    /// Waits until a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.readable().await,
            Self::Tls(s) if s.buffered => Ok(()),
            Self::Tls(s) => s.tcp.readable().await,
        }
    }

    /// Ready with true once the client has sent bytes the session should read, false when it
    /// closed or failed. Peeks, so nothing is consumed and no buffer is needed: a resting
    /// connection holds none. TLS bytes already decrypted count as data at once; raw TLS
    /// records count too (a record that carries no request only costs one empty read).
    pub fn poll_has_data(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        let tcp = match self {
            Self::Plain(s) => s,
            Self::Tls(s) if s.buffered => return std::task::Poll::Ready(true),
            Self::Tls(s) => &s.tcp,
        };
        let mut probe = [0u8; 1];
        tcp.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut probe))
            .map(|peeked| peeked.is_ok_and(|n| n > 0))
    }

    /// Reads what is available without waiting into `buf`'s spare capacity; `Ok(0)` at the
    /// end of the stream, `WouldBlock` when nothing is there yet.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.try_read_buf(buf),
            Self::Tls(s) => s.try_read_buf(buf),
        }
    }

    /// Reads into `buf` like `try_read_buf`, but a plaintext read that finds nothing clears the
    /// socket's readiness and registers `cx` (Pending), so the caller's next wait does not
    /// spend a syscall to learn it would block. A TLS read reports `WouldBlock` as an error,
    /// its socket reads having cleared the readiness already.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut BytesMut,
    ) -> std::task::Poll<io::Result<usize>> {
        match self {
            Self::Plain(s) => tokio_util::io::poll_read_buf(std::pin::Pin::new(s), cx, buf),
            Self::Tls(s) => std::task::Poll::Ready(s.try_read_buf(buf)),
        }
    }

    /// Waits until a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.writable().await,
            Self::Tls(s) => s.tcp.writable().await,
        }
    }

    /// Writes what the socket takes without waiting; `WouldBlock` when it takes nothing.
    ///
    /// As with OpenSSL's `SSL_write`, a call that failed with `WouldBlock` must be repeated
    /// with a buffer that starts with the same bytes: TLS may already have encrypted part of
    /// them, and reports them written only once they are on the wire.
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.try_write(data),
            Self::Tls(s) => s.try_write(data),
        }
    }

    /// Writes all of `data`, waiting for the socket as needed.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the sending direction: TLS `close_notify`, then the TCP FIN.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown().await,
            Self::Tls(s) => {
                s.conn.send_close_notify();
                while !s.push_tls()? {
                    s.tcp.writable().await?;
                }
                s.tcp.shutdown().await
            }
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The address the client connected to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.tcp,
        }
    }
}

/// A TLS client connection after its handshake, driven by readiness.
pub struct ServerTls {
    tcp: TcpStream,
    conn: ServerConnection,
    /// rustls may hold more plaintext (or the end of the stream) than the last read took:
    /// `readable` must not wait for the socket, which may never signal again.
    buffered: bool,
    /// The socket reached its end.
    eof: bool,
    /// Plaintext of the caller's buffer already encrypted by a write that reported
    /// `WouldBlock`; reported written once its records are on the wire.
    accepted: usize,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("tcp", &self.tcp)
            .field("buffered", &self.buffered)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_RESERVE);
        }
        // rustls reads into initialised memory: zero the window once per call.
        let start = buf.len();
        let window = (buf.capacity() - start).min(READ_WINDOW);
        buf.resize(start + window, 0);
        let result = self.read_into(&mut buf[start..]);
        buf.truncate(start + result.as_ref().map_or(0, |n| *n));
        result
    }

    /// Drains decrypted bytes into `out`, reading records from the socket until it has no
    /// more, `out` is full, or the stream ends.
    fn read_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.buffered = false;
        let mut total = 0;
        loop {
            if total == out.len() {
                self.buffered = true;
                return Ok(total);
            }
            match self.conn.reader().read(&mut out[total..]) {
                Ok(0) => return self.end(total),
                Ok(n) => {
                    total += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return self.end(total),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.eof {
                return self.end(total);
            }
            match self.conn.read_tls(&mut SyncIo(&self.tcp)) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => return Ok(total),
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Best effort: tell the client why (the alert rustls queued), then fail.
                let _ = self.push_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Post-handshake replies (a key update) go out with the next write at the latest.
            let _ = self.push_tls();
        }
    }

    /// The client closed (with or without close_notify): data read so far first, then `Ok(0)`.
    fn end(&mut self, total: usize) -> io::Result<usize> {
        self.eof = true;
        self.buffered = true;
        Ok(total)
    }

    fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.push_tls()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.accepted > 0 {
            // Encrypted by an earlier call, and now on the wire.
            let n = std::mem::take(&mut self.accepted);
            debug_assert!(n <= data.len(), "try_write repeated with a shorter buffer");
            return Ok(n.min(data.len()));
        }
        let n = self.conn.writer().write(data)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.push_tls()? {
            Ok(n)
        } else {
            self.accepted = n;
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Writes queued TLS records without waiting; true when none is left.
    fn push_tls(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut SyncIo(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Drop for ServerTls {
    fn drop(&mut self) {
        // A clean close for the client, if the socket takes it now; never waits.
        self.conn.send_close_notify();
        let _ = self.push_tls();
    }
}

/// The socket as blocking-style `Read`/`Write` whose calls never block: `WouldBlock` comes
/// back instead, which rustls passes through, and which clears tokio's readiness.
struct SyncIo<'a>(&'a TcpStream);

impl Read for SyncIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SyncIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
