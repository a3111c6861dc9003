//! The completion order of the send queue: work requests complete in the order they were
//! posted (the verbs' rule), whatever order they finish in. A Send or Write finishes once its
//! last byte is handed to TCP (RFC 5040 §5.1/§5.3), a Read or atomic when its response
//! arrives, anything else at once; each entry waits for the ones before it.

use super::{Completion, PostQueues, Queue, WcOpcode, WcStatus};
use iwarp_wire::terminate::TerminateCause;
use std::collections::VecDeque;
use std::sync::Arc;

/// How a work request finished.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    pub status: WcStatus,
    pub byte_len: u32,
    pub cause: Option<TerminateCause>,
}

impl Done {
    /// Finished with `status`, no data length, no Terminate cause.
    pub const fn status(status: WcStatus) -> Self {
        Done { status, byte_len: 0, cause: None }
    }

    /// Flushed.
    pub const FLUSH: Done = Done::status(WcStatus::WrFlush);
}

/// A work request's place in the order.
#[derive(Debug)]
struct Entry {
    wr_id: u64,
    opcode: WcOpcode,
    signaled: bool,
    done: Option<Done>,
}

/// A work request that finishes once the stream has been sent up to `end`.
#[derive(Debug)]
struct Hold {
    end: u64,
    seq: u64,
}

/// Send work requests from the time they are taken off the posting queue until their
/// completion is handed out; each is named by its sequence number.
#[derive(Debug)]
pub(super) struct CompletionOrder {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    head: u64,
    /// Requests waiting for their bytes to be sent, in stream order.
    holds: VecDeque<Hold>,
    /// Where posted requests are counted until they complete.
    posts: Arc<PostQueues>,
}

impl CompletionOrder {
    pub fn new(posts: Arc<PostQueues>) -> Self {
        CompletionOrder { entries: VecDeque::new(), head: 0, holds: VecDeque::new(), posts }
    }

    /// Adds a request taken off the posting queue; returns its sequence number.
    pub fn push(&mut self, wr_id: u64, opcode: WcOpcode, signaled: bool) -> u64 {
        let seq = self.head + self.entries.len() as u64;
        self.entries.push_back(Entry { wr_id, opcode, signaled, done: None });
        seq
    }

    /// Adds a request that never went through the posting queue (see
    /// [`PostQueues::admit`]); returns its sequence number.
    pub fn push_admitted(&mut self, wr_id: u64, opcode: WcOpcode, signaled: bool) -> u64 {
        self.posts.admit();
        self.push(wr_id, opcode, signaled)
    }

    /// Adds a request that finished before it started (flushed), always reported.
    pub fn push_done(&mut self, wr_id: u64, opcode: WcOpcode, done: Done) {
        self.entries.push_back(Entry { wr_id, opcode, signaled: true, done: Some(done) });
    }

    /// Request `seq` finished (the first word stands: a later one is ignored).
    pub fn finish(&mut self, seq: u64, done: Done) {
        let Some(i) = seq.checked_sub(self.head) else { return };
        if let Some(e) = usize::try_from(i).ok().and_then(|i| self.entries.get_mut(i)) {
            e.done.get_or_insert(done);
        }
    }

    /// Request `seq` finishes successfully once the stream is sent up to `end`.
    pub fn hold(&mut self, seq: u64, end: u64) {
        self.holds.push_back(Hold { end, seq });
    }

    /// The stream has been sent up to `sent`: every request held for bytes before it finishes.
    pub fn sent(&mut self, sent: u64) {
        while let Some(h) = self.holds.front() {
            if h.end > sent {
                break;
            }
            let seq = h.seq;
            self.holds.pop_front();
            // RFC 5040 §5.1/§5.3: a Send or Write completes at the source once handed to the LLP.
            self.finish(seq, Done::status(WcStatus::Success));
        }
    }

    /// Every request still held for unsent bytes is flushed.
    pub fn flush_held(&mut self) {
        while let Some(h) = self.holds.pop_front() {
            self.finish(h.seq, Done::FLUSH);
        }
    }

    /// Every request not yet finished is flushed.
    pub fn flush_rest(&mut self) {
        self.holds.clear();
        for e in &mut self.entries {
            e.done.get_or_insert(Done::FLUSH);
        }
    }

    /// Moves the finished requests at the front into `out` as completions (unsignaled
    /// successes silently), and counts them off the posting side in one update.
    pub fn release(&mut self, out: &mut VecDeque<Completion>) {
        let mut retired = 0;
        while let Some(d) = self.entries.front().and_then(|e| e.done) {
            let Some(e) = self.entries.pop_front() else { break };
            self.head += 1;
            retired += 1;
            if e.signaled || d.status != WcStatus::Success {
                let mut c = Completion::new(e.wr_id, d.status, e.opcode, Queue::Send);
                c.byte_len = d.byte_len;
                c.cause = d.cause;
                out.push_back(c);
            }
        }
        if retired > 0 {
            self.posts.retire(retired);
        }
    }
}
