//! Work requests and completions between their C form and the stack's.
//!
//! `ffi` copies each C work request into a [`SendReq`] or [`RecvReq`] (plain data, inline
//! payload bytes already copied); this module resolves their local keys to memory regions and
//! posts them, and turns the stack's completions into `struct ibv_wc`.
// Matches use the C constants under bindgen's names (`ibv_qp_state_IBV_QPS_INIT`, ...).
#![allow(non_upper_case_globals)]

use crate::abi::*;
use crate::state::{self, Errno, Mr, Qp, Res};
use iwarp::{PostError, PostReason, RecvWr, RemoteAddr, SendWr, Sge, Stag, WcOpcode, WcStatus, WorkCompletion};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A send work request, copied out of its `struct ibv_send_wr`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendReq {
    pub(crate) wr_id: u64,
    pub(crate) opcode: u32,
    pub(crate) flags: u32,
    pub(crate) sges: Vec<ibv_sge>,
    /// The gathered bytes, with `IBV_SEND_INLINE` (and only then).
    pub(crate) inline: Option<Vec<u8>>,
    /// `imm_data` (network order) or `invalidate_rkey`: one union in C.
    pub(crate) imm_or_inval: u32,
    pub(crate) remote_addr: u64,
    pub(crate) rkey: u32,
    pub(crate) compare_add: u64,
    pub(crate) swap: u64,
}

/// A receive work request, copied out of its `struct ibv_recv_wr`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecvReq {
    pub(crate) wr_id: u64,
    pub(crate) sges: Vec<ibv_sge>,
}

/// Regions of a request's elements, resolved before the stack's work requests borrow them.
struct Resolved {
    mrs: Vec<(Arc<Mr>, usize, usize)>,
}

fn resolve(sges: &[ibv_sge]) -> Res<Resolved> {
    let mut mrs = Vec::with_capacity(sges.len());
    for s in sges {
        let mr = state::mr_by_lkey(s.lkey).ok_or(Errno::INVAL)?;
        let offset = s.addr.checked_sub(mr.mr.addr()).ok_or(Errno::INVAL)?;
        let offset = usize::try_from(offset).map_err(|_| Errno::INVAL)?;
        let len = s.length as usize;
        if offset.checked_add(len).is_none_or(|end| end > mr.mr.len()) {
            return Err(Errno::INVAL);
        }
        mrs.push((mr, offset, len));
    }
    Ok(Resolved { mrs })
}

impl Resolved {
    fn sges(&self) -> Vec<Sge<'_>> {
        self.mrs.iter().map(|(mr, off, len)| mr.mr.sge(*off, *len)).collect()
    }
}

/// What a post to a queue pair whose connection closed or failed answers: not an errno the
/// application sees. The caller completes the requests with `IBV_WC_WR_FLUSH_ERR` (what
/// Linux siw does for work posted in its ERROR state; see [`flush_recvs`]) and returns
/// success.
pub(crate) const FLUSH: Errno = Errno(-libc::ESHUTDOWN);

/// The errno of a refused post (what rdma-core's providers return for the same causes).
fn post_errno(e: &PostError) -> Errno {
    match e.reason {
        PostReason::InvalidState(iwarp::QpState::Closing | iwarp::QpState::Terminate | iwarp::QpState::Error) => FLUSH,
        PostReason::QueueFull => Errno::NOMEM,
        PostReason::NotSupportedByPeer => Errno::NOTSUP,
        _ => Errno::INVAL,
    }
}

/// Posts send work requests, all or none.
///
/// # Errors
/// An errno for the first request that cannot be posted (none of them is).
pub(crate) fn post_send(qp: &Qp, reqs: &[SendReq]) -> Res<()> {
    // Inline payloads were copied from the elements' addresses; their keys mean nothing.
    let resolved = reqs
        .iter()
        .map(|r| if r.inline.is_some() { Ok(Resolved { mrs: Vec::new() }) } else { resolve(&r.sges) })
        .collect::<Res<Vec<_>>>()?;
    let sges: Vec<Vec<Sge<'_>>> = resolved.iter().map(Resolved::sges).collect();
    let mut wrs = Vec::with_capacity(reqs.len());
    for (r, sg) in reqs.iter().zip(&sges) {
        let remote = RemoteAddr::unbounded(Stag(r.rkey), r.remote_addr);
        let inline = r.inline.as_deref();
        let one = || sg.first().copied().filter(|_| sg.len() == 1).ok_or(Errno::INVAL);
        let wr = match r.opcode {
            ibv_wr_opcode_IBV_WR_RDMA_WRITE => match inline {
                Some(d) => SendWr::write_inline(r.wr_id, d, remote),
                None => SendWr::write(r.wr_id, sg, remote),
            },
            ibv_wr_opcode_IBV_WR_RDMA_WRITE_WITH_IMM => {
                let wr = SendWr::write_with_imm(r.wr_id, sg, remote, u32::from_be(r.imm_or_inval).into());
                match inline {
                    Some(d) => wr.inline_data(d),
                    None => wr,
                }
            }
            ibv_wr_opcode_IBV_WR_SEND => match inline {
                Some(d) => SendWr::send_inline(r.wr_id, d),
                None => SendWr::send(r.wr_id, sg),
            },
            ibv_wr_opcode_IBV_WR_SEND_WITH_INV => {
                let wr = SendWr::send_with_invalidate(r.wr_id, sg, Stag(r.imm_or_inval));
                match inline {
                    Some(d) => wr.inline_data(d),
                    None => wr,
                }
            }
            ibv_wr_opcode_IBV_WR_RDMA_READ => SendWr::read(r.wr_id, one()?, remote),
            ibv_wr_opcode_IBV_WR_ATOMIC_FETCH_AND_ADD => SendWr::fetch_add(r.wr_id, one()?, remote, r.compare_add),
            ibv_wr_opcode_IBV_WR_ATOMIC_CMP_AND_SWP => {
                SendWr::compare_swap(r.wr_id, one()?, remote, r.compare_add, r.swap)
            }
            ibv_wr_opcode_IBV_WR_LOCAL_INV => SendWr::local_invalidate(r.wr_id, Stag(r.imm_or_inval)),
            // Send with Immediate has no iWARP message (RFC 7306 has Immediate Data alone, and
            // Write with Immediate); memory windows and the rest are not implemented.
            _ => return Err(Errno::INVAL),
        };
        let mut wr = wr.signaled(qp.sq_sig_all || r.flags & ibv_send_flags_IBV_SEND_SIGNALED != 0);
        if r.flags & ibv_send_flags_IBV_SEND_SOLICITED != 0 {
            wr = wr.solicited();
        }
        if r.flags & ibv_send_flags_IBV_SEND_FENCE != 0 {
            wr = wr.fence();
        }
        wrs.push(wr);
    }
    qp.qp.post_send(&wrs).map_err(|e| post_errno(&e))
}

fn recv_wrs<'a>(reqs: &[RecvReq], resolved: &'a [Resolved]) -> Vec<RecvWr<'a>> {
    reqs.iter().zip(resolved).map(|(r, res)| RecvWr::new(r.wr_id, &res.sges())).collect()
}

/// Posts receive work requests to a queue pair, all or none.
///
/// # Errors
/// An errno if one cannot be posted (none of them is).
pub(crate) fn post_recv(qp: &Qp, reqs: &[RecvReq]) -> Res<()> {
    let resolved = reqs.iter().map(|r| resolve(&r.sges)).collect::<Res<Vec<_>>>()?;
    let wrs = recv_wrs(reqs, &resolved);
    qp.qp.post_recv(&wrs).map_err(|e| post_errno(&e))
}

/// Posts receive work requests to a shared receive queue, all or none.
///
/// # Errors
/// As [`post_recv`].
pub(crate) fn post_srq_recv(srq: &state::Srq, reqs: &[RecvReq]) -> Res<()> {
    let resolved = reqs.iter().map(|r| resolve(&r.sges)).collect::<Res<Vec<_>>>()?;
    let wrs = recv_wrs(reqs, &resolved);
    srq.srq.post_recv(&wrs).map_err(|e| post_errno(&e))
}

fn wc_status(s: WcStatus) -> ibv_wc_status {
    match s {
        WcStatus::Success => ibv_wc_status_IBV_WC_SUCCESS,
        WcStatus::LocalLength => ibv_wc_status_IBV_WC_LOC_LEN_ERR,
        WcStatus::LocalQpOperation => ibv_wc_status_IBV_WC_LOC_QP_OP_ERR,
        WcStatus::LocalProtection => ibv_wc_status_IBV_WC_LOC_PROT_ERR,
        WcStatus::WrFlush => ibv_wc_status_IBV_WC_WR_FLUSH_ERR,
        WcStatus::RemoteInvalidRequest => ibv_wc_status_IBV_WC_REM_INV_REQ_ERR,
        WcStatus::RemoteAccess => ibv_wc_status_IBV_WC_REM_ACCESS_ERR,
        WcStatus::RemoteOperation => ibv_wc_status_IBV_WC_REM_OP_ERR,
        WcStatus::Fatal => ibv_wc_status_IBV_WC_FATAL_ERR,
        _ => ibv_wc_status_IBV_WC_GENERAL_ERR,
    }
}

fn wc_opcode(o: WcOpcode) -> ibv_wc_opcode {
    match o {
        WcOpcode::RdmaWrite => ibv_wc_opcode_IBV_WC_RDMA_WRITE,
        WcOpcode::RdmaRead => ibv_wc_opcode_IBV_WC_RDMA_READ,
        WcOpcode::CompareSwap => ibv_wc_opcode_IBV_WC_COMP_SWAP,
        WcOpcode::FetchAdd => ibv_wc_opcode_IBV_WC_FETCH_ADD,
        WcOpcode::LocalInvalidate => ibv_wc_opcode_IBV_WC_LOCAL_INV,
        WcOpcode::Recv => ibv_wc_opcode_IBV_WC_RECV,
        WcOpcode::RecvImmediate => ibv_wc_opcode_IBV_WC_RECV_RDMA_WITH_IMM,
        // Sends of every kind, and Immediate Data sent alone.
        _ => ibv_wc_opcode_IBV_WC_SEND,
    }
}

/// `struct ibv_wc` of a completion.
pub(crate) fn to_ibv_wc(c: &WorkCompletion) -> ibv_wc {
    let mut wc = ibv_wc {
        wr_id: c.wr_id,
        status: wc_status(c.status),
        opcode: wc_opcode(c.opcode),
        byte_len: c.byte_len,
        qp_num: c.qp_num,
        ..Default::default()
    };
    if let Some(imm) = c.imm_data {
        // The verbs carry 32 bits of immediate data, in network order.
        wc.__bindgen_anon_1.imm_data = (imm as u32).to_be();
        wc.wc_flags |= ibv_wc_flags_IBV_WC_WITH_IMM;
    } else if let Some(stag) = c.invalidated_stag {
        wc.__bindgen_anon_1.invalidated_rkey = stag.0;
        wc.wc_flags |= ibv_wc_flags_IBV_WC_WITH_INV;
    }
    wc
}

/// Polls up to `out.len()` completions of a completion queue.
///
/// An empty poll drives the queue's queue pairs from this thread (`Progress::Assisted`). A
/// thread that has found its queues empty, with no bytes to move for them, for
/// [`SPIN_BEFORE_NAP`], polling without pause (a perftest server waiting for the final
/// handshake while its peer writes), naps in each further empty poll of a queue without a
/// completion channel, [`SPIN_NAP`] at first and doubling up to [`SPIN_NAP_MAX`], woken by
/// the queue's next completion: a busy-poll loop on an idle queue would otherwise take the
/// CPU the event loop needs to serve the peer. Queues with a channel belong to applications
/// that sleep on it, and never nap.
pub(crate) fn poll(cq: &state::Cq, out: &mut [ibv_wc]) -> usize {
    let mut buf = [WorkCompletion::default(); 16];
    let mut n = 0;
    let mut waited = false;
    while n < out.len() {
        let want = (out.len() - n).min(buf.len());
        let (mut got, moved) = cq.cq.poll_progress(&mut buf[..want]);
        if moved {
            // This thread moved bytes (a transmitting poster): not idle.
            busy();
        } else if got == 0 && n == 0 && !waited && cq.channel.is_none() && idle_long() {
            waited = true;
            got = cq.cq.wait(&mut buf[..want], Some(next_nap()));
        }
        for (slot, c) in out[n..].iter_mut().zip(&buf[..got]) {
            *slot = to_ibv_wc(c);
        }
        n += got;
        if got < want {
            break;
        }
    }
    if n > 0 {
        busy();
    }
    n
}

/// How long a thread must have found its completion queues empty, polling without pause,
/// before an empty poll sleeps ([`SPIN_NAP`] at most, woken by the next completion).
const SPIN_BEFORE_NAP: Duration = Duration::from_micros(100);
/// The longest an empty `ibv_poll_cq` sleeps.
const SPIN_NAP: Duration = Duration::from_micros(200);
/// Naps double while the run lasts, up to this: a completion ends a nap at once, so the
/// length only bounds how late a thread polling several queues in turn sees another
/// queue's completion, and a thread that waits long wakes less often for nothing.
const SPIN_NAP_MAX: Duration = Duration::from_millis(2);
/// Polls farther apart than this (per [`CHECK_EVERY`] polls) are not a busy-poll loop.
const SPIN_GAP: Duration = Duration::from_millis(1);
const CHECK_EVERY: u32 = 64;

/// A busy-polling thread's run of empty polls.
#[derive(Clone, Copy)]
struct Idle {
    polls: u32,
    /// When the run began, and the clock at the last check (read every [`CHECK_EVERY`] polls).
    began: Option<(Instant, Instant)>,
    /// The run has lasted [`SPIN_BEFORE_NAP`]: empty polls nap.
    napping: bool,
    /// The next nap's length (from [`SPIN_NAP`], doubling up to [`SPIN_NAP_MAX`]).
    nap: Duration,
}

thread_local! {
    static IDLE: Cell<Idle> = const { Cell::new(Idle::FRESH) };
}

impl Idle {
    const FRESH: Idle = Idle { polls: 0, began: None, napping: false, nap: SPIN_NAP };

    /// Counts an empty poll, reading the clock (`now`) every [`CHECK_EVERY`] polls.
    fn step(mut self, now: impl FnOnce() -> Instant) -> Idle {
        if self.napping {
            return self;
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(CHECK_EVERY) {
            let now = now();
            self.began = match self.began {
                // A pause between polls (an application polling now and then) starts over.
                Some((began, last)) if now.duration_since(last) <= SPIN_GAP => {
                    self.napping = now.duration_since(began) >= SPIN_BEFORE_NAP;
                    Some((began, now))
                }
                _ => Some((now, now)),
            };
        }
        self
    }
}

/// Counts an empty poll; `true` once this thread has spun on empty queues long enough that
/// the poll should nap. A completion resets the run ([`busy`]).
fn idle_long() -> bool {
    IDLE.with(|i| {
        let s = i.get().step(Instant::now);
        i.set(s);
        s.napping
    })
}

/// The length of this nap; the next one doubles (within [`SPIN_NAP_MAX`]).
fn next_nap() -> Duration {
    IDLE.with(|i| {
        let mut s = i.get();
        let nap = s.nap;
        s.nap = (nap * 2).min(SPIN_NAP_MAX);
        i.set(s);
        nap
    })
}

fn busy() {
    IDLE.with(|i| i.set(Idle::FRESH));
}

/// Before `ibv_get_cq_event` sleeps in `read(2)` of a blocking channel: drives the
/// channel's completion queues' queue pairs from this thread for up to
/// [`channel_spin`] (`IWARP_CHANNEL_SPIN_US`), returning a notification that came meanwhile.
///
/// A thread woken through the channel pays two cross-core wake-ups per message (the event
/// loop's, on the socket; then its own, on the channel), about 40 µs each on small VMs:
/// qperf's latency tests, which sleep on the channel by default, measured 158 µs a round
/// trip that way. Reading the socket itself while the reply is due takes both away.
pub(crate) fn spin_for_event(chan: &state::Chan) -> Option<u32> {
    let spin = channel_spin();
    if spin.is_zero() {
        return None;
    }
    let cqs: Vec<Arc<state::Cq>> = {
        let m = chan.cqs.lock().unwrap_or_else(|e| e.into_inner());
        m.values().filter_map(|&a| state::cq(a).ok().map(|(q, _)| q)).collect()
    };
    let start = Instant::now();
    loop {
        for q in &cqs {
            q.cq.drive();
        }
        if let Some(id) = chan.ch.pop_event() {
            return Some(id);
        }
        if start.elapsed() >= spin {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// How long `ibv_get_cq_event` drives its queues before it sleeps: `IWARP_CHANNEL_SPIN_US`
/// microseconds (read once), [`CHANNEL_SPIN_DEFAULT_US`] when unset or unreadable, `0` to
/// sleep at once.
fn channel_spin() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| parse_channel_spin(std::env::var("IWARP_CHANNEL_SPIN_US").ok()))
}

const CHANNEL_SPIN_DEFAULT_US: u64 = 0;

fn parse_channel_spin(var: Option<String>) -> Duration {
    let us = var.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(CHANNEL_SPIN_DEFAULT_US).min(1_000_000);
    Duration::from_micros(us)
}

/// Completes receive requests with `IBV_WC_WR_FLUSH_ERR` (see [`FLUSH`]): through the
/// stack's queue pair, so they reach the completion queue behind the queue pair's own
/// flushed work and signal an armed completion channel as every completion does.
pub(crate) fn flush_recvs(qp: &Qp, reqs: &[RecvReq]) {
    qp.qp.complete_flushed(reqs.iter().map(|r| (r.wr_id, WcOpcode::Recv)));
}

/// Completes the signalled send requests with `IBV_WC_WR_FLUSH_ERR` (see [`flush_recvs`]).
pub(crate) fn flush_sends(qp: &Qp, reqs: &[SendReq]) {
    let signalled = reqs.iter().filter(|r| qp.sq_sig_all || r.flags & ibv_send_flags_IBV_SEND_SIGNALED != 0);
    qp.qp.complete_flushed(signalled.map(|r| {
        let opcode = match r.opcode {
            ibv_wr_opcode_IBV_WR_RDMA_WRITE | ibv_wr_opcode_IBV_WR_RDMA_WRITE_WITH_IMM => WcOpcode::RdmaWrite,
            ibv_wr_opcode_IBV_WR_RDMA_READ => WcOpcode::RdmaRead,
            ibv_wr_opcode_IBV_WR_ATOMIC_CMP_AND_SWP => WcOpcode::CompareSwap,
            ibv_wr_opcode_IBV_WR_ATOMIC_FETCH_AND_ADD => WcOpcode::FetchAdd,
            ibv_wr_opcode_IBV_WR_LOCAL_INV => WcOpcode::LocalInvalidate,
            _ => WcOpcode::Send,
        };
        (r.wr_id, opcode)
    }));
}

#[cfg(test)]
mod idle_tests {
    use super::*;

    /// `CHECK_EVERY` empty polls at `t`.
    fn polls_at(mut s: Idle, t: Instant) -> Idle {
        for _ in 0..CHECK_EVERY {
            s = s.step(|| t);
        }
        s
    }

    #[test]
    fn a_thread_naps_only_after_spinning_on_empty_queues_without_pause() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        // Spinning: checks 50 µs apart; napping once the run reaches SPIN_BEFORE_NAP.
        let mut s = polls_at(Idle::FRESH, us(0));
        s = polls_at(s, us(50));
        assert!(!s.napping, "50 µs is not long enough");
        s = polls_at(s, us(100));
        assert!(s.napping, "100 µs of spinning naps");
        assert!(s.step(|| unreachable!("a napping run reads no clock")).napping);
        // Polls far apart (an application polling now and then) never nap.
        let mut s = Idle::FRESH;
        for k in 0..10 {
            s = polls_at(s, us(2_000 * k));
            assert!(!s.napping, "a pause between polls starts the run over");
        }
    }
}
