//! The pinned connection's task: its state, the job loop, making the connection on first
//! use, marking it broken after a failure, and leaving it clean (or closing it) at the end.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::moving_error;
use super::{answer, error_frame, Job, JobKind, PinContext};
use crate::backend::{Budget, DedicatedConn, DedicatedError};
use crate::protocol::{classify_error, encode, ReplyKind, ServerError};

/// The task's connection state.
pub(super) struct Pin {
    pub(super) ctx: PinContext,
    pub(super) addr: SocketAddr,
    pub(super) proto: u8,
    pub(super) conn: Option<DedicatedConn>,
    /// Why the connection is unusable; later jobs get this error.
    pub(super) broken: Option<String>,
    /// A WATCH is in force on the connection.
    pub(super) watching: bool,
    /// The budget a new connection is counted against: the current job's kind.
    pub(super) budget: Budget,
}

/// Runs the jobs in order until the handle is dropped, then leaves the connection clean.
pub(super) async fn run(
    ctx: PinContext,
    addr: SocketAddr,
    proto: u8,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut pin = Pin {
        ctx,
        addr,
        proto,
        conn: None,
        broken: None,
        watching: false,
        budget: Budget::Transaction,
    };
    while let Some(job) = jobs.recv().await {
        let reply = job.reply.clone();
        let frame = tokio::select! {
            frame = pin.run_job(job) => frame,
            // The client went away: drop the connection (closing it) without waiting.
            _ = reply.tx.closed() => return,
        };
        answer(&reply, frame);
    }
    pin.finish().await;
}

impl Pin {
    /// Runs one job; a broken connection answers every later job with its error.
    async fn run_job(&mut self, job: Job) -> Bytes {
        if let Some(why) = &self.broken {
            return error_frame(&format!("ERR slotway: {why}"));
        }
        self.budget = job.kind.budget();
        match job.kind {
            JobKind::Watch => self.watch(&job.raw).await,
            JobKind::Exec { queued, durable } => {
                self.exec(&job.raw, queued, durable.as_ref()).await
            }
            JobKind::Blocking { limit, durable } => {
                self.blocking(job.raw, limit, None, durable.as_ref(), false)
                    .await
            }
            JobKind::Script {
                limit,
                reload,
                durable,
            } => {
                self.blocking(job.raw, limit, reload, durable.as_ref(), true)
                    .await
            }
        }
    }

    /// The connection, made on first use; connect failures are retried while the topology
    /// may be changing.
    pub(super) async fn conn(&mut self) -> Result<&mut DedicatedConn, String> {
        if self.conn.is_none() {
            let deadline = Instant::now() + self.ctx.retry_deadline;
            let conn = loop {
                match self
                    .ctx
                    .pool
                    .checkout(self.addr, self.proto, self.budget)
                    .await
                {
                    Ok(c) => break c,
                    Err(e @ DedicatedError::Exhausted { .. }) => return Err(e.to_string()),
                    Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                    Err(_) => {
                        self.ctx.router.request_refresh();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// Marks the connection unusable after `err` and returns the client's error reply.
    pub(super) fn fail(&mut self, what: &str, err: DedicatedError) -> Bytes {
        self.conn = None;
        let why = format!("{what}: {err}");
        self.broken = Some(why.clone());
        error_frame(&format!("ERR slotway: {why}"))
    }

    /// A cluster routing error (MOVED, ASK, TRYAGAIN, CLUSTERDOWN …) inside a pinned
    /// exchange cannot be retried transparently: it becomes a clear error.
    pub(super) fn routing_error(&self, what: &str, frame: &[u8]) -> Option<Bytes> {
        let err = classify_error(frame);
        match err {
            ServerError::Moved { slot, addr } => {
                let to = addr.parse::<crate::net::NodeAddr>().ok();
                if let Some(to) = to.and_then(|a| a.socket_addr()) {
                    self.ctx.router.note_moved(slot, to);
                }
            }
            ServerError::Ask { .. } | ServerError::TryAgain => {}
            ServerError::ClusterDown
            | ServerError::Loading
            | ServerError::MasterDown
            | ServerError::ReadOnly => self.ctx.router.request_refresh(),
            _ => return None,
        }
        Some(moving_error(what, frame))
    }

    /// Leaves the connection clean for the pool, or closes it.
    async fn finish(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.watching {
            let mut cmd = BytesMut::new();
            encode::command(&mut cmd, &[b"UNWATCH"]);
            let limit = Some(conn.reply_timeout());
            if conn.write(&cmd).await.is_err() {
                return;
            }
            match conn.read_frame_within(limit).await {
                Ok((_, ReplyKind::Other)) => {}
                _ => return,
            }
        }
        conn.release();
    }
}
