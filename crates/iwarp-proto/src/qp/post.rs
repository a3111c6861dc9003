//! The posting side of a queue pair: the send and receive work requests application threads
//! hand to the engine, validated and queued without the engine itself. The thread that moves
//! the connection's bytes holds the engine across system calls; posting never waits for it.
//!
//! The engine takes queued sends when it frames (and receives when a message needs one), and
//! publishes its state here on every transition, under the same locks the posts take: a post
//! that passes the state check is in the queue before the engine can close it, and the
//! engine flushes whatever a close finds queued, so no work request is ever lost.

use super::{LinkParams, PostError, QpConfig, QpState, RecvWqe, SendOp, SendWqe};
use crate::mem::{Access, PdId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What a send is checked against: the state and what the connection negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate {
    pub(crate) state: QpState,
    pub(crate) rfc7306: bool,
    pub(crate) ord: u32,
}

#[derive(Debug)]
struct Sends {
    queue: VecDeque<SendWqe>,
    gate: Gate,
}

#[derive(Debug)]
struct Recvs {
    queue: VecDeque<RecvWqe>,
    state: QpState,
}

/// A queue pair's posted and not yet taken work requests, shared between the application's
/// threads and the engine.
#[derive(Debug)]
pub struct PostQueues {
    cfg: QpConfig,
    uses_srq: bool,
    sends: Mutex<Sends>,
    recvs: Mutex<Recvs>,
    /// Sends queued here (not yet taken by the engine), readable without the lock.
    queued: AtomicUsize,
    /// Sends posted and not yet completed, here or in the engine (the send queue's depth).
    used: AtomicUsize,
    /// The engine found no receive for a message and waits for one (set under the lock of
    /// the queue it looked in; see [`PostQueues::take_recv_waiter`]).
    recv_waiter: AtomicBool,
}

impl PostQueues {
    pub(crate) fn new(cfg: QpConfig, uses_srq: bool) -> Self {
        let gate = Gate { state: QpState::Idle, rfc7306: false, ord: 0 };
        PostQueues {
            cfg,
            uses_srq,
            sends: Mutex::new(Sends { queue: VecDeque::new(), gate }),
            recvs: Mutex::new(Recvs { queue: VecDeque::new(), state: QpState::Idle }),
            queued: AtomicUsize::new(0),
            used: AtomicUsize::new(0),
            recv_waiter: AtomicBool::new(false),
        }
    }

    fn sends(&self) -> MutexGuard<'_, Sends> {
        self.sends.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recvs(&self) -> MutexGuard<'_, Recvs> {
        self.recvs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts send work requests (all or none), to be framed in order.
    ///
    /// # Errors
    /// [`PostError`] if any is invalid, needs RFC 7306 the peer lacks, the queue pair is not
    /// ready to send, or the send queue would overflow. The failing request is the last one
    /// taken from `wqes` (none for a queue pair that is not ready).
    pub fn post_send(&self, wqes: impl IntoIterator<Item = SendWqe>) -> Result<(), PostError> {
        let mut s = self.sends();
        if s.gate.state != QpState::Rts {
            return Err(PostError::InvalidState(s.gate.state));
        }
        let start = s.queue.len();
        let used = self.used.load(Ordering::Acquire);
        for w in wqes {
            let r = if used + (s.queue.len() - start) >= self.cfg.sq_depth {
                Err(PostError::QueueFull)
            } else {
                validate_send(&self.cfg, s.gate, &w)
            };
            if let Err(e) = r {
                s.queue.truncate(start);
                return Err(e);
            }
            s.queue.push_back(w);
        }
        let n = s.queue.len() - start;
        self.used.fetch_add(n, Ordering::AcqRel);
        self.queued.fetch_add(n, Ordering::Release);
        Ok(())
    }

    /// Posts receive work requests (all or none). Allowed before the connection is set up.
    ///
    /// # Errors
    /// [`PostError`] if any is invalid, the queue pair takes receives from a shared receive
    /// queue or is closing or in error, or the receive queue would overflow. The failing
    /// request is the last one taken from `wqes` (none for the first two).
    pub fn post_recv(&self, wqes: impl IntoIterator<Item = RecvWqe>) -> Result<(), PostError> {
        if self.uses_srq {
            return Err(PostError::UsesSrq);
        }
        let mut r = self.recvs();
        if matches!(r.state, QpState::Error | QpState::Terminate | QpState::Closing) {
            return Err(PostError::InvalidState(r.state));
        }
        let start = r.queue.len();
        for w in wqes {
            if let Err(e) = validate_recv(&w, self.cfg.pd, self.cfg.max_recv_sge) {
                r.queue.truncate(start);
                return Err(e);
            }
            if r.queue.len() >= self.cfg.rq_depth {
                r.queue.truncate(start);
                return Err(PostError::QueueFull);
            }
            r.queue.push_back(w);
        }
        Ok(())
    }

    /// `true` (once) if the engine waits for a receive (a Send arrived with none posted, see
    /// [`Qp::set_recv_wait`](super::Qp::set_recv_wait)): call it after posting a receive, to
    /// this queue or to the shared receive queue this queue pair takes from, and if it says
    /// so, have the driver read again (no socket readiness will announce bytes that are
    /// already queued). The engine raises the flag under the lock of the queue it found empty,
    /// so a receive posted after that lock is always followed by `true` here.
    pub fn take_recv_waiter(&self) -> bool {
        self.recv_waiter.load(Ordering::SeqCst) && self.recv_waiter.swap(false, Ordering::SeqCst)
    }

    /// Raises the flag of [`take_recv_waiter`](Self::take_recv_waiter).
    pub(crate) fn set_recv_waiter(&self) {
        self.recv_waiter.store(true, Ordering::SeqCst);
    }

    /// The engine's state as last published (posting threads read it here).
    pub fn state(&self) -> QpState {
        self.sends().gate.state
    }

    /// Send work requests posted and not yet completed.
    pub fn send_outstanding(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Receive work requests posted and not yet taken.
    pub fn recv_queued(&self) -> usize {
        self.recvs().queue.len()
    }

    /// The engine's state and what the connection negotiated, for the checks of later posts.
    pub(crate) fn publish(&self, state: QpState, link: Option<&LinkParams>) {
        {
            let mut s = self.sends();
            s.gate = Gate { state, rfc7306: link.is_some_and(|l| l.rfc7306), ord: link.map_or(0, |l| l.ord) };
        }
        self.recvs().state = state;
    }

    /// `true` if sends wait to be taken.
    pub(crate) fn has_sends(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// Moves every queued send, in order, to the back of `sq`.
    pub(crate) fn take_sends(&self, sq: &mut VecDeque<SendWqe>) {
        if !self.has_sends() {
            return;
        }
        let mut s = self.sends();
        self.queued.fetch_sub(s.queue.len(), Ordering::AcqRel);
        if sq.is_empty() {
            // The usual case: hand the whole queue over without moving a request.
            std::mem::swap(sq, &mut s.queue);
        } else {
            sq.extend(s.queue.drain(..));
        }
    }

    /// Counts `n` sends the engine completed (or that completed on the fast path).
    pub(crate) fn retire(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Counts a send the engine took past this queue (the fast path's partly written FPDU).
    pub(crate) fn admit(&self) {
        self.used.fetch_add(1, Ordering::AcqRel);
    }

    /// The oldest posted receive; if there is none, the waiter flag is raised (under the
    /// queue's lock; see [`take_recv_waiter`](Self::take_recv_waiter)).
    pub(crate) fn next_recv(&self) -> Option<RecvWqe> {
        let mut r = self.recvs();
        let w = r.queue.pop_front();
        if w.is_none() {
            self.set_recv_waiter();
        }
        w
    }

    /// Every posted receive, oldest first (to be flushed).
    pub(crate) fn drain_recvs(&self) -> Vec<RecvWqe> {
        self.recvs().queue.drain(..).collect()
    }
}

/// The checks of a send work request against the queue pair's limits and what the connection
/// negotiated.
pub(crate) fn validate_send(cfg: &QpConfig, gate: Gate, w: &SendWqe) -> Result<(), PostError> {
    if w.op.is_rfc7306() && !gate.rfc7306 {
        return Err(PostError::NotSupportedByPeer);
    }
    // RFC 6581 §9.1: with an outbound read depth of 0 no Read or atomic may be issued.
    if w.op.awaits_response() && gate.ord == 0 {
        return Err(PostError::NoReadCredits);
    }
    let len = w.payload.len();
    if len > u64::from(u32::MAX) {
        return Err(PostError::InvalidLength);
    }
    match &w.payload {
        super::Payload::Inline(b) => {
            if b.len() > cfg.max_inline {
                return Err(PostError::InlineTooLong);
            }
            if w.op.awaits_response() {
                // Reads and atomics need a registered sink.
                return Err(PostError::InvalidLength);
            }
        }
        super::Payload::Sges(s) => {
            if s.len() > cfg.max_send_sge {
                return Err(PostError::TooManySges);
            }
            let need = if w.op.awaits_response() { Access::LOCAL_WRITE } else { Access::empty() };
            for sge in s {
                sge.validate(cfg.pd, need)?;
            }
        }
    }
    match w.op {
        // RFC 5040 §5.2: a Read's sink is one buffer (max_sge_rd = 1 on iWARP).
        SendOp::Read(_) if matches!(&w.payload, super::Payload::Sges(s) if s.len() > 1) => Err(PostError::TooManySges),
        // RFC 7306 §5.1: atomics work on 8 bytes; the original value is written into one
        // element whole, so the sink is exactly one element of 8 bytes.
        SendOp::FetchAdd { .. } | SendOp::CompareSwap { .. }
            if len != 8 || !matches!(&w.payload, super::Payload::Sges(s) if s.len() == 1) =>
        {
            Err(PostError::InvalidLength)
        }
        SendOp::FetchAdd { remote, .. } | SendOp::CompareSwap { remote, .. } if remote.to % 8 != 0 => {
            Err(PostError::InvalidLength)
        }
        SendOp::Immediate(_) | SendOp::LocalInvalidate(_) if len != 0 => Err(PostError::InvalidLength),
        SendOp::Write(remote) | SendOp::WriteWithImmediate(remote, _) | SendOp::Read(remote)
            if len > u64::from(remote.len) =>
        {
            Err(PostError::RemoteTooShort)
        }
        SendOp::FetchAdd { remote, .. } | SendOp::CompareSwap { remote, .. } if remote.len < 8 => {
            Err(PostError::RemoteTooShort)
        }
        _ => Ok(()),
    }
}

/// The checks of a receive work request.
pub(crate) fn validate_recv(w: &RecvWqe, pd: PdId, max_sge: usize) -> Result<(), PostError> {
    if w.sges.len() > max_sge {
        return Err(PostError::TooManySges);
    }
    if w.len() > u64::from(u32::MAX) {
        return Err(PostError::InvalidLength);
    }
    for s in &w.sges {
        s.validate(pd, Access::LOCAL_WRITE)?;
    }
    Ok(())
}
