//! MULTI / EXEC / DISCARD / WATCH / UNWATCH.
//!
//! Commands between MULTI and EXEC are checked and queued by the session, which answers
//! `+QUEUED` (or the error Redis would give at queue time, which makes EXEC answer
//! `-EXECABORT`). Every key of the transaction, watched keys included, must hash to one slot
//! (else `-CROSSSLOT`, as Redis Cluster answers). EXEC sends `MULTI`, the queued commands and
//! `EXEC` in one write on a pinned connection to that slot's primary — the one WATCH opened, if
//! any — so the transaction needs a dedicated connection only for the time EXEC takes, and
//! MULTI pipelined with everything else just works.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::cluster::slot::key_slot;
use crate::command::CommandFlags;
use crate::protocol::encode;
use crate::proxy::classify::{Decision, LocalCmd, TxCmd};
use crate::proxy::pinned::{JobKind, PinnedHandle};

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The commands queued since MULTI.
#[derive(Debug, Default)]
pub(super) struct TxState {
    /// Each command's raw request, in order.
    queued: Vec<Bytes>,
    /// A command was refused at queue time: EXEC answers EXECABORT.
    dirty: bool,
}

/// The pinned connection a WATCH opened, kept until EXEC, DISCARD, UNWATCH or RESET.
#[derive(Debug)]
pub(super) struct Watch {
    handle: PinnedHandle,
}

impl Session {
    /// A transaction command outside MULTI.
    pub(super) async fn transaction(&mut self, cmd: TxCmd, raw: Bytes, args: &[Range<usize>]) {
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
    pub(super) async fn queue_in_tx(
        &mut self,
        decision: Decision,
        raw: Bytes,
        args: &[Range<usize>],
    ) {
        match decision {
            Decision::Transaction(TxCmd::Multi) => self.push_error("ERR MULTI calls can not be nested"),
            Decision::Transaction(TxCmd::Exec) => self.exec(raw, args),
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
            _ => self.enqueue_keyed(raw, args),
        }
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
                    match spec.key_indices(&raw, args, &mut self.keys) {
                        Err(e) => Err(e.to_string()),
                        Ok(()) => Ok(self
                            .keys
                            .iter()
                            .filter_map(|&i| args.get(i))
                            .map(|r| key_slot(&raw[r.clone()]))
                            .collect::<Vec<u16>>()),
                    }
                }
            }
        };
        let slots = match checked {
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
        self.modes.tx_slot = slot;
        self.enqueue(raw);
    }

    fn enqueue(&mut self, raw: Bytes) {
        if let Some(tx) = &mut self.modes.tx {
            tx.queued.push(raw);
        }
        self.push_simple("QUEUED");
    }

    /// Answers a queue-time error; EXEC will then answer EXECABORT, as in Redis.
    fn refuse_in_tx(&mut self, msg: &str) {
        if let Some(tx) = &mut self.modes.tx {
            tx.dirty = true;
        }
        self.push_error(msg);
    }

    fn exec(&mut self, raw: Bytes, args: &[Range<usize>]) {
        if self.hold_if_busy(&raw, args) {
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
        let handle = match watch {
            Some(w) => w.handle,
            None => match self.pin_addr(slot) {
                Ok(addr) => PinnedHandle::open(self.pin_context(), addr, self.client.proto()),
                Err(msg) => return self.push_error(msg),
            },
        };
        let size = tx.queued.iter().map(Bytes::len).sum::<usize>() + 32;
        let mut batch = BytesMut::with_capacity(size);
        encode::command(&mut batch, &[b"MULTI"]);
        for cmd in &tx.queued {
            batch.extend_from_slice(cmd);
        }
        encode::command(&mut batch, &[b"EXEC"]);
        let queued = tx.queued.len();
        self.send_pinned(&handle, batch.freeze(), JobKind::Exec { queued });
    }

    /// Leaves MULTI and releases any WATCH (DISCARD, RESET).
    pub(super) fn end_transaction(&mut self) {
        self.modes.tx = None;
        self.modes.watch = None;
        self.modes.tx_slot = None;
    }

    /// Queues a simple-string reply.
    pub(super) fn push_simple(&mut self, s: &str) {
        let mut out = BytesMut::with_capacity(s.len() + 3);
        encode::simple(&mut out, s);
        self.push_reply(out.freeze());
    }

    /// Number of commands queued, for CLIENT INFO (`-1` outside MULTI).
    pub(super) fn queued_count(&self) -> i64 {
        self.modes
            .tx
            .as_ref()
            .map_or(-1, |t| i64::try_from(t.queued.len()).unwrap_or(i64::MAX))
    }
}
