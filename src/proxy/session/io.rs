//! Client I/O: the read buffer requests are split off, the write buffer replies are
//! coalesced in, the output limit, write backpressure and the idle timer. One read drains
//! what the socket has; one flush writes every ready reply, without waiting on a full socket.
//!
//! This module owns the buffers and the socket-level flags; it does not parse, route or
//! order anything (the pipeline hands it replies already in order).

use bytes::{Buf, BytesMut};

use super::{Session, SessionError};
use crate::security::limits::{self, IdleTimer};
use crate::tls::ClientStream;

/// A client connection's buffers and socket state.
pub(super) struct ClientIo {
    /// Unparsed client bytes; requests are split off it without copying.
    pub(super) rbuf: BytesMut,
    /// Replies ready to write, in order.
    pub(super) wbuf: BytesMut,
    /// The last write stopped at a full socket; wait for writability before trying again.
    pub(super) write_blocked: bool,
    /// Bytes moved since the last quiet-period check.
    pub(super) active: bool,
    /// Reading is paused at the in-flight cap (counted once per pause).
    pub(super) capped: bool,
    /// Closes the client after `client.idle_timeout_ms` without traffic.
    pub(super) idle: IdleTimer,
}

impl ClientIo {
    /// Empty buffers (they grow on first use: an idle client holds none).
    pub(super) fn new(idle: IdleTimer) -> Self {
        Self {
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            write_blocked: false,
            active: false,
            capped: false,
            idle,
        }
    }

    /// Reads what the socket has into the read buffer, reserving `chunk` when it runs low.
    /// `Some(0)`: the client has gone; None: nothing to read after all.
    async fn fill(
        &mut self,
        stream: &mut ClientStream,
        chunk: usize,
    ) -> std::io::Result<Option<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < chunk / 4 {
            self.rbuf.reserve(chunk);
        }
        // Through `poll_read`, not `try_read_buf`: a short read clears the socket's readiness,
        // so the next turn of the loop does not spend a syscall to learn it would block.
        let read = std::future::poll_fn(|cx| match stream.poll_read_buf(cx, &mut self.rbuf) {
            std::task::Poll::Pending => {
                std::task::Poll::Ready(Err(std::io::ErrorKind::WouldBlock.into()))
            }
            ready => ready,
        });
        match read.await {
            Ok(0) => Ok(Some(0)),
            Ok(n) => {
                self.idle.touch();
                self.active = true;
                Ok(Some(n))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes as much of the write buffer as the socket takes without waiting; returns the
    /// bytes written. The rest stays buffered until the socket is writable.
    fn write_some(&mut self, stream: &mut ClientStream) -> std::io::Result<usize> {
        let mut wrote = 0;
        while !self.wbuf.is_empty() && !self.write_blocked {
            match stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.idle.touch();
                    self.active = true;
                    wrote += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(wrote)
    }

    /// After everything was written: a large reply's buffer is not kept for an idle client.
    fn reset_wbuf(&mut self) {
        self.wbuf.clear();
        if self.wbuf.capacity() > 1 << 20 {
            self.wbuf = BytesMut::new();
        }
    }

    /// After a read batch: a large request's buffer is not kept for an idle client.
    pub(super) fn shrink_rbuf(&mut self, read_buffer_bytes: usize) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * read_buffer_bytes {
            self.rbuf = BytesMut::new();
        }
    }

    /// True when the client holds more unwritten output than `limit` (with `queued`, the
    /// replies waiting in the pipeline).
    pub(super) fn over_output_limit(&self, queued: usize, limit: usize) -> bool {
        limits::over_output_limit(self.wbuf.len() + queued, limit)
    }

    /// True when nothing is buffered either way.
    pub(super) fn is_idle(&self) -> bool {
        self.rbuf.is_empty() && self.wbuf.is_empty() && !self.write_blocked
    }

    /// Gives back both buffers; they grow again on first use.
    pub(super) fn release(&mut self) {
        self.rbuf = BytesMut::new();
        self.wbuf = BytesMut::new();
    }
}

impl Session {
    /// Reads what the socket has and dispatches every complete request.
    /// Returns false when the client has gone.
    pub(super) async fn read(&mut self) -> Result<bool, SessionError> {
        let chunk = self.shared.config.client.read_buffer_bytes;
        match self.io.fill(&mut self.stream, chunk).await? {
            Some(0) => return Ok(false),
            Some(n) => self.metrics.read(n),
            None => return Ok(true),
        }
        self.dispatch_all().await;
        Ok(true)
    }

    /// Moves ready replies to the write buffer and writes what the socket takes now.
    pub(super) fn flush(&mut self) -> Result<(), SessionError> {
        self.collect_ready();
        let wrote = self.io.write_some(&mut self.stream)?;
        if wrote > 0 {
            self.metrics.wrote(wrote);
        }
        if !self.io.wbuf.is_empty() {
            return Ok(());
        }
        self.modes.flushed();
        self.io.reset_wbuf();
        Ok(())
    }
}
