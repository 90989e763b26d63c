//! One subscription connection: the small task that owns it, and the bookkeeping of the
//! confirmations each command sent on it still owes, which releases the client's own
//! confirmation once the node has really subscribed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Backlog, Confirm};
use crate::backend::DedicatedConn;
use crate::protocol::encode;

/// What a link reports to the subscriber task.
pub(super) enum Event {
    /// A frame from the node.
    Frame(Bytes),
    /// The client's message backlog went past its limit; the link has stopped reading.
    Overflow,
    /// The connection ended.
    Closed,
}

/// One subscription connection, run by its own small task.
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) addr: SocketAddr,
    pub(super) cmds: mpsc::UnboundedSender<Bytes>,
    /// Confirmations still owed by the node, per command sent, in order.
    pub(super) owed: VecDeque<Owed>,
}

/// The confirmations one command sent on a link will produce.
pub(super) struct Owed {
    /// The confirmation verb (`subscribe`, `sunsubscribe` …).
    verb: &'static [u8],
    /// Frames still to come.
    frames: usize,
    /// The client's confirmation, released when the last frame arrives.
    confirm: Option<Confirm>,
    /// When the command was sent.
    since: Instant,
}

impl Link {
    /// Sends `VERB names…` and records the confirmations it will produce.
    pub(super) fn send(&mut self, verb: &'static [u8], names: &[Bytes], confirm: Option<Confirm>) {
        if names.is_empty() {
            if let Some(c) = confirm {
                c.deliver();
            }
            return;
        }
        let _ = self.cmds.send(command(verb, names));
        self.owed.push_back(Owed {
            verb: confirmation_verb(verb),
            frames: names.len(),
            confirm,
            since: Instant::now(),
        });
    }

    /// Counts a confirmation frame of `verb`; false when it answers no command this link
    /// sent (Redis dropped a shard subscription by itself).
    pub(super) fn confirmed(&mut self, verb: &[u8]) -> bool {
        let Some(head) = self.owed.front_mut() else {
            return false;
        };
        if verb != head.verb {
            return false;
        }
        head.frames = head.frames.saturating_sub(1);
        if head.frames == 0 {
            if let Some(c) = self.owed.pop_front().and_then(|o| o.confirm) {
                c.deliver();
            }
        }
        true
    }

    /// An error reply: it answers the oldest command still owed as a whole (Redis refuses a
    /// command with one error, whatever the number of names). Returns that command's
    /// client confirmation, now to be refused; None when nothing was owed.
    pub(super) fn refused(&mut self) -> Option<Option<Confirm>> {
        self.owed.pop_front().map(|o| o.confirm)
    }

    /// When the oldest command still unanswered was sent (None: nothing owed).
    pub(super) fn owed_since(&self) -> Option<Instant> {
        self.owed.front().map(|o| o.since)
    }

    /// The client confirmations still owed (the connection is gone).
    pub(super) fn take_owed(&mut self) -> Vec<Confirm> {
        self.owed.drain(..).filter_map(|o| o.confirm).collect()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Never confirmed by the node: the client must not believe it is subscribed.
        for c in self.take_owed() {
            let why = super::confirm::not_in_place(c.kind(), "the connection to the node closed");
            c.refuse(&why);
        }
    }
}

/// The verb of the confirmations a command produces (lower case).
fn confirmation_verb(verb: &[u8]) -> &'static [u8] {
    match verb {
        b"SUBSCRIBE" => b"subscribe",
        b"PSUBSCRIBE" => b"psubscribe",
        b"SSUBSCRIBE" => b"ssubscribe",
        b"UNSUBSCRIBE" => b"unsubscribe",
        b"PUNSUBSCRIBE" => b"punsubscribe",
        _ => b"sunsubscribe",
    }
}

/// The verb of a confirmation frame (`*3\r\n$9\r\nsubscribe\r\n…`).
pub(super) fn frame_verb(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"*3\r\n$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let verb = rest.get(cr + 2..cr + 2 + len)?;
    verb.ends_with(b"subscribe").then_some(verb)
}

/// Runs one subscription connection: writes the commands it is given, forwards every frame.
///
/// Messages count against the client's `backlog` here, as they are read, rather than when the
/// subscriber task passes them on: the queue to the task is unbounded, and the task may be
/// busy opening another connection while this one keeps reading.
pub(super) async fn link(
    mut conn: DedicatedConn,
    id: u64,
    mut cmds: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::UnboundedSender<(u64, Event)>,
    backlog: Arc<Backlog>,
) {
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(bytes) => {
                    if conn.write(&bytes).await.is_err() {
                        break;
                    }
                }
                // Dropped by the task: close the connection (it is not clean).
                None => return,
            },
            frame = conn.read_frame() => match frame {
                Ok((frame, _)) => {
                    if is_message(&frame) && !backlog.add(frame.len()) {
                        let _ = events.send((id, Event::Overflow));
                        return;
                    }
                    if events.send((id, Event::Frame(frame))).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            },
        }
    }
    let _ = events.send((id, Event::Closed));
}

/// `VERB names…` as a request.
pub(super) fn command(verb: &[u8], names: &[Bytes]) -> Bytes {
    let mut args: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
    args.push(verb);
    args.extend(names.iter().map(|n| &n[..]));
    let mut out = BytesMut::new();
    encode::command(&mut out, &args);
    out.freeze()
}

/// True for a `message`, `pmessage` or `smessage` frame (RESP2 array form).
pub(super) fn is_message(frame: &[u8]) -> bool {
    frame.starts_with(b"*3\r\n$7\r\nmessage\r\n")
        || frame.starts_with(b"*4\r\n$8\r\npmessage\r\n")
        || frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n")
}

/// The channel of a `sunsubscribe` confirmation frame.
pub(super) fn unsolicited_sunsubscribe(frame: &[u8]) -> Option<Bytes> {
    let rest = frame.strip_prefix(b"*3\r\n$12\r\nsunsubscribe\r\n$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let body = rest.get(cr + 2..cr + 2 + len)?;
    Some(Bytes::copy_from_slice(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_messages_and_shard_unsubscribes() {
        assert!(is_message(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"));
        assert!(is_message(
            b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$1\r\nx\r\n"
        ));
        assert!(!is_message(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"));
        assert_eq!(
            unsolicited_sunsubscribe(b"*3\r\n$12\r\nsunsubscribe\r\n$3\r\nabc\r\n:0\r\n").unwrap(),
            &b"abc"[..]
        );
        assert!(unsolicited_sunsubscribe(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n").is_none());
    }

    #[test]
    fn commands_are_multibulk() {
        assert_eq!(
            &command(b"SUBSCRIBE", &[Bytes::from_static(b"a")])[..],
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n"
        );
    }
    #[test]
    fn confirmation_verbs() {
        assert_eq!(
            frame_verb(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
            Some(&b"subscribe"[..])
        );
        assert_eq!(
            frame_verb(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nc\r\n:0\r\n"),
            Some(&b"sunsubscribe"[..])
        );
        assert_eq!(
            frame_verb(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"),
            None
        );
        assert_eq!(confirmation_verb(b"PSUBSCRIBE"), b"psubscribe");
    }
}
