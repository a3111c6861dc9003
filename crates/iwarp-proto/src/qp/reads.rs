//! The two read queues of RFC 5040 §5.2 (and RFC 7306 §5 for atomics): the Reads and atomics
//! this side has outstanding, answered in order (what ORD bounds), and the ones the peer has
//! outstanding here, whose responses go out in the order their requests arrived (what IRD
//! bounds). Receive fills and empties them; transmit frames from them.

use super::Sge;
use crate::mem::Window;
use iwarp_wire::rdmap::AtomicResponse;
use iwarp_wire::Stag;
use std::collections::VecDeque;

/// An outstanding Read or atomic of ours.
#[derive(Debug)]
pub(super) struct Outstanding {
    /// Its place in the completion order (`None` for our own RTR Read).
    pub seq: Option<u64>,
    pub kind: OutstandingKind,
}

#[derive(Debug)]
pub(super) enum OutstandingKind {
    /// A Read: the response lands in `sink` (none for a zero-length Read), addressed by the
    /// sink STag and TO the request named.
    Read { sink: Option<Sge>, sink_stag: Stag, sink_to: u64, size: u32 },
    /// An atomic: the original value lands in `sink`.
    Atomic { sink: Sge, request_id: u32 },
}

/// Our Reads and atomics awaiting their responses, oldest first.
#[derive(Debug, Default)]
pub(super) struct OutboundReads {
    queue: VecDeque<Outstanding>,
}

impl OutboundReads {
    pub fn push(&mut self, seq: Option<u64>, kind: OutstandingKind) {
        self.queue.push_back(Outstanding { seq, kind });
    }

    /// The oldest, which the next response answers.
    pub fn oldest(&self) -> Option<&Outstanding> {
        self.queue.front()
    }

    /// The oldest was answered (or failed).
    pub fn pop(&mut self) -> Option<Outstanding> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A response we owe the peer.
#[derive(Debug)]
pub(super) enum Response {
    /// To a Read: `source` (validated; none for a zero-length Read) sent to the sink the
    /// request named.
    Read {
        sink_stag: Stag,
        sink_to: u64,
        source: Option<Window>,
    },
    Atomic(AtomicResponse),
}

/// The peer's Reads and atomics we have accepted and not yet fully answered.
#[derive(Debug, Default)]
pub(super) struct InboundReads {
    queue: VecDeque<Response>,
    /// One of them is being framed.
    answering: bool,
}

impl InboundReads {
    pub fn push(&mut self, r: Response) {
        self.queue.push_back(r);
    }

    /// Takes the next response to frame; it counts against IRD until [`answered`](Self::answered).
    pub fn start(&mut self) -> Option<Response> {
        let r = self.queue.pop_front();
        self.answering |= r.is_some();
        r
    }

    /// The response being framed is fully framed.
    pub fn answered(&mut self) {
        self.answering = false;
    }

    /// Requests not yet fully answered (what IRD bounds).
    pub fn pending(&self) -> usize {
        self.queue.len() + usize::from(self.answering)
    }

    /// `true` when no response waits to be started.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets every response (the queue pair is closing or in error).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.answering = false;
    }
}
