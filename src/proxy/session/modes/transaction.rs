//! MULTI / EXEC / DISCARD / WATCH / UNWATCH.
//!
//! Commands between MULTI and EXEC are checked and queued by the session, which answers
//! `+QUEUED` (or the error Redis would give at queue time). As in Redis (`flagTransaction`),
//! any refusal while queuing — the security check's NOPERM or policy refusal, an unknown
//! command, wrong arity, CROSSSLOT, a command that needs every shard, a queue over
//! `client.max_transaction_*` — makes EXEC answer `-EXECABORT` and run nothing; a nested MULTI
//! or a WATCH inside MULTI is an error that does not. Every key of the transaction, watched
//! keys included, must hash to one slot (else `-CROSSSLOT`, as Redis Cluster answers). EXEC
//! sends `MULTI`, the queued commands and `EXEC` as one contiguous request to that slot's
//! primary: on the client's shared connection for a RESP2 client without WATCH, else on a
//! pinned connection (the one WATCH opened, if any). A transaction that writes counts for the
//! client's next `WAIT` and, in durable-write mode, is confirmed with `WAIT` on the connection
//! that ran it before EXEC's reply is passed on.
//!
//! What a shared EXEC's run of replies means is decided by `proxy::recovery::exec_reply`.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::backend::BackendRequest;
use crate::cluster::slot::key_slot;
use crate::command::{CommandFlags, CommandSpec};
use crate::protocol::encode;
use crate::proxy::classify::{Decision, Fan, LocalCmd, TxCmd};
use crate::proxy::pinned::{JobKind, PinnedHandle};
use crate::proxy::session::{Pending, Session};

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The commands queued since MULTI.
#[derive(Debug, Default)]
pub(in crate::proxy::session) struct TxState {
    /// Each command's raw request, in order (emptied once the transaction is dirty).
    queued: Vec<Bytes>,
    /// Commands answered `+QUEUED`, for CLIENT INFO.
    count: usize,
    /// Bytes held in `queued`.
    bytes: usize,
    /// Some queued command may write.
    writes: bool,
    /// A command was refused at queue time: EXEC answers EXECABORT.
    dirty: bool,
}

/// The pinned connection a WATCH opened, kept until EXEC, DISCARD, UNWATCH or RESET.
#[derive(Debug)]
pub(in crate::proxy::session) struct Watch {
    handle: PinnedHandle,
}

impl Session {
    /// A transaction command outside MULTI.
    pub(in crate::proxy::session) async fn transaction(
        &mut self,
        cmd: TxCmd,
        raw: Bytes,
        args: &[Range<usize>],
    ) {
        match cmd {
            TxCmd::Multi => {
                self.modes.tx = Some(TxState::default());
                self.push_simple("OK");
            }
            TxCmd::Exec => self.push_error("ERR EXEC without MULTI"),
            TxCmd::Discard => self.push_error("ERR DISCARD without MULTI"),
            TxCmd::Watch { slot } => self.watch(slot, raw, args),
            TxCmd::Unwatch => {
                // Dropping the handle makes the pinned connection UNWATCH and go back clean.
                self.modes.watch = None;
                self.modes.tx_slot = None;
                self.push_simple("OK");
            }
        }
    }

    fn watch(&mut self, slot: u16, raw: Bytes, args: &[Range<usize>]) {
        if self.modes.tx_slot.is_some_and(|s| s != slot) {
            return self.push_error(CROSSSLOT);
        }
        if self.hold_if_busy(&raw, args) {
            return;
        }
        if self.modes.watch.is_none() {
            let addr = match self.pin_addr(Some(slot)) {
                Ok(a) => a,
                Err(msg) => return self.push_error(msg),
            };
            let handle = PinnedHandle::open(self.pin_context(), addr, self.client.proto());
            self.modes.watch = Some(Watch { handle });
        }
        self.modes.tx_slot = Some(slot);
        if let Some(w) = self.modes.watch.take() {
            self.send_pinned(&w.handle, raw, JobKind::Watch);
            self.modes.watch = Some(w);
        }
    }

    /// A request while inside MULTI.
    pub(in crate::proxy::session) async fn queue_in_tx(
        &mut self,
        decision: Decision,
        raw: Bytes,
        args: &[Range<usize>],
    ) {
        match decision {
            Decision::Transaction(TxCmd::Multi) => self.push_error("ERR MULTI calls can not be nested"),
            Decision::Transaction(TxCmd::Exec) => self.exec(raw, args).await,
            Decision::Transaction(TxCmd::Discard) => {
                self.end_transaction();
                self.push_simple("OK");
            }
            Decision::Transaction(TxCmd::Watch { .. }) => {
                self.push_error("ERR WATCH inside MULTI is not allowed")
            }
            Decision::Transaction(TxCmd::Unwatch)
            | Decision::Local(LocalCmd::Ping(_) | LocalCmd::Echo) => self.enqueue(raw),
            Decision::Local(cmd @ (LocalCmd::Quit | LocalCmd::Reset)) => self.local(cmd, &raw, args),
            Decision::Local(_) => self.refuse_in_tx(
                "ERR slotway: this command is answered by the proxy and cannot be part of a transaction",
            ),
            Decision::Error(msg) => self.refuse_in_tx(&msg),
            Decision::Subscription => self.refuse_in_tx(
                "ERR slotway: Pub/Sub commands cannot be part of a transaction",
            ),
            // A transaction runs on one shard: keys in several slots are Redis Cluster's
            // CROSSSLOT, and a command answered from every shard would see (or flush) one.
            Decision::Fanout(Fan::Split { .. }) => self.refuse_in_tx(CROSSSLOT),
            Decision::Fanout(_) => {
                let name = args
                    .first()
                    .map(|r| String::from_utf8_lossy(&raw[r.clone()]).to_ascii_uppercase())
                    .unwrap_or_default();
                self.refuse_in_tx(&format!(
                    "ERR slotway: {name} cannot be part of a transaction (it needs every shard)"
                ))
            }
            Decision::Forward { .. } | Decision::Eval { .. } | Decision::Blocking { .. } => {
                self.enqueue_keyed(raw, args)
            }
        }
    }

    /// Inside MULTI, a command the security layer would answer itself (AUTH, HELLO) cannot
    /// be queued for EXEC: the error it is refused with.
    pub(in crate::proxy::session) fn local_in_tx(
        &self,
        spec: Option<&CommandSpec>,
    ) -> Option<String> {
        let spec = spec?;
        if self.modes.tx.is_none() || !matches!(spec.name.as_str(), "auth" | "hello") {
            return None;
        }
        Some(format!(
            "ERR slotway: {} cannot be part of a transaction",
            spec.name.to_ascii_uppercase()
        ))
    }

    /// A reply refusing a request (the security check's): inside MULTI it flags the
    /// transaction, as every refusal does in Redis.
    pub(in crate::proxy::session) fn refuse_reply(&mut self, reply: Bytes) {
        if reply.first() == Some(&b'-') {
            self.flag_transaction();
        }
        self.push_reply(reply);
    }

    /// Queues a command with keys after checking that it may run in a transaction and that
    /// its keys share the transaction's slot.
    fn enqueue_keyed(&mut self, raw: Bytes, args: &[Range<usize>]) {
        let checked = {
            let table = self.shared.router.commands();
            match table.resolve(&raw, args) {
                None => Err("ERR slotway: unknown command".to_string()),
                Some(spec) if spec.flags.contains(CommandFlags::NO_MULTI) => {
                    Err("ERR Command not allowed inside a transaction".to_string())
                }
                Some(spec) => {
                    self.keys.clear();
                    let writes = !spec.flags.contains(CommandFlags::READONLY)
                        || spec.flags.contains(CommandFlags::WRITE);
                    match spec.key_indices(&raw, args, &mut self.keys) {
                        Err(e) => Err(e.to_string()),
                        Ok(()) => Ok((
                            writes,
                            self.keys
                                .iter()
                                .filter_map(|&i| args.get(i))
                                .map(|r| key_slot(&raw[r.clone()]))
                                .collect::<Vec<u16>>(),
                        )),
                    }
                }
            }
        };
        let (writes, slots) = match checked {
            Ok(s) => s,
            Err(msg) => return self.refuse_in_tx(&msg),
        };
        let mut slot = self.modes.tx_slot;
        for s in slots {
            match slot {
                Some(prev) if prev != s => return self.refuse_in_tx(CROSSSLOT),
                _ => slot = Some(s),
            }
        }
        if writes {
            if let Some(tx) = &mut self.modes.tx {
                tx.writes = true;
            }
        }
        self.modes.tx_slot = slot;
        self.enqueue(raw);
    }

    /// Queues a command within `client.max_transaction_commands` and `_bytes`; past either
    /// it is refused, since QUEUED is answered here and no in-flight cap would stop a client
    /// queuing without end.
    fn enqueue(&mut self, raw: Bytes) {
        let limits = &self.shared.config.client;
        let (max_commands, max_bytes) = (
            limits.max_transaction_commands,
            limits.max_transaction_bytes,
        );
        let Some(tx) = &mut self.modes.tx else {
            return self.push_simple("QUEUED");
        };
        if tx.count >= max_commands || tx.bytes.saturating_add(raw.len()) > max_bytes {
            return self.refuse_in_tx(&format!(
                "ERR slotway: transaction too large (at most {max_commands} commands and \
                 {max_bytes} bytes may be queued: client.max_transaction_commands / \
                 client.max_transaction_bytes)"
            ));
        }
        tx.count += 1;
        // A dirty transaction will not run: nothing more is kept for it.
        if !tx.dirty {
            tx.bytes += raw.len();
            tx.queued.push(raw);
        }
        self.push_simple("QUEUED");
    }

    /// Answers a queue-time error; EXEC will then answer EXECABORT, as in Redis.
    pub(in crate::proxy::session) fn refuse_in_tx(&mut self, msg: &str) {
        self.flag_transaction();
        self.push_error(msg);
    }

    /// Marks the transaction (if any) to be aborted by EXEC and releases its queue now.
    fn flag_transaction(&mut self) {
        if let Some(tx) = &mut self.modes.tx {
            tx.dirty = true;
            tx.queued = Vec::new();
            tx.bytes = 0;
        }
    }

    /// EXEC. A RESP2 client's transaction without WATCH goes to the slot's primary over the
    /// shared connection, as one contiguous `MULTI … EXEC` that no other client's request
    /// can interleave with: its writes then count for a later `WAIT` there, and durable mode
    /// confirms it like any write. A WATCH'd transaction runs on the connection the WATCH
    /// pinned, and a RESP3 client's on a RESP3 connection (EXEC's reply holds each command's
    /// RESP3 types).
    async fn exec(&mut self, raw: Bytes, args: &[Range<usize>]) {
        let shared = self.modes.watch.is_none() && !self.client.resp3();
        if !shared && self.hold_if_busy(&raw, args) {
            return;
        }
        let Some(tx) = self.modes.tx.take() else {
            return self.push_error("ERR EXEC without MULTI");
        };
        let slot = self.modes.tx_slot.take();
        let watch = self.modes.watch.take();
        if tx.dirty {
            return self.push_error("EXECABORT Transaction discarded because of previous errors.");
        }
        if tx.queued.is_empty() && watch.is_none() {
            let mut out = BytesMut::new();
            encode::array_header(&mut out, 0);
            return self.push_reply(out.freeze());
        }
        let queued = tx.queued.len();
        let size = tx.queued.iter().map(Bytes::len).sum::<usize>() + 32;
        let mut batch = BytesMut::with_capacity(size);
        encode::command(&mut batch, &[b"MULTI"]);
        for cmd in &tx.queued {
            batch.extend_from_slice(cmd);
        }
        encode::command(&mut batch, &[b"EXEC"]);
        drop(tx.queued);
        if shared {
            if let Ok(replies) = u32::try_from(queued + 2) {
                return self
                    .exec_shared(slot, batch.freeze(), replies, tx.writes)
                    .await;
            }
        }
        let handle = match watch {
            Some(w) => w.handle,
            None => match self.pin_addr(slot) {
                Ok(addr) => PinnedHandle::open(self.pin_context(), addr, self.client.proto()),
                Err(msg) => return self.push_error(msg),
            },
        };
        let durable = if tx.writes {
            self.note_pinned_write(slot, handle.addr());
            self.durable_wait()
        } else {
            None
        };
        self.send_pinned(&handle, batch.freeze(), JobKind::Exec { queued, durable });
    }

    /// Sends `MULTI … EXEC` (`replies` frames owed) on this client's shared connection to
    /// the slot's primary; its answer is judged by [`exec_reply`], never redirected or re-sent.
    async fn exec_shared(&mut self, slot: Option<u16>, batch: Bytes, replies: u32, writes: bool) {
        let pool = match self.primary_pool(slot) {
            Ok(p) => p,
            Err(msg) => return self.push_error(msg),
        };
        if writes {
            self.note_write(&pool);
        }
        let tag = self.push_pending(Pending::Pinned);
        self.modes.shared_execs.push((tag.seq, replies));
        let req = BackendRequest {
            raw: batch,
            asking: false,
            durable: writes && self.shared.config.cluster.durable_writes,
            replies,
            reply: self.reply_to(tag),
        };
        pool.send(req, self.id).await;
    }

    /// Leaves MULTI and releases any WATCH (DISCARD, RESET).
    pub(in crate::proxy::session) fn end_transaction(&mut self) {
        self.modes.tx = None;
        self.modes.watch = None;
        self.modes.tx_slot = None;
    }

    /// Queues a simple-string reply.
    pub(in crate::proxy::session) fn push_simple(&mut self, s: &str) {
        let mut out = BytesMut::with_capacity(s.len() + 3);
        encode::simple(&mut out, s);
        self.push_reply(out.freeze());
    }

    /// Number of commands queued, for CLIENT INFO (`-1` outside MULTI).
    pub(in crate::proxy::session) fn queued_count(&self) -> i64 {
        self.modes
            .tx
            .as_ref()
            .map_or(-1, |t| i64::try_from(t.count).unwrap_or(i64::MAX))
    }
}
