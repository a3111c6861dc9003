//! Async/await on a [tokio](https://docs.rs/tokio) runtime (feature `tokio`).
//!
//! - Connection setup as futures: [`QueuePair::connect_async`], [`QueuePair::established`],
//!   [`Listener::next_request`], [`Listener::next_incoming`],
//!   [`ConnectRequest::accept_async`]. They are woken by the event loop's reports, never
//!   wait in a system call, and are cancellation-safe: a request or connection is taken from
//!   the listener's queue only when the future returns it, and dropping a connect or accept
//!   future that has started leaves the attempt running on the event loop (its outcome is
//!   still reported as a [`crate::QpEvent`]); drop the queue pair to abandon it.
//! - [`CompletionStream`]: the completions of any number of completion queues that signal one
//!   [`CompletionChannel`], as a [`futures_core::Stream`], with the channel's descriptor
//!   registered with tokio's [`AsyncFd`].
//! - [`AsyncQueuePair`]: a queue pair whose posts each return a [`WrFuture`] that resolves
//!   with the request's completion. The queue pair keeps a handle of every region a request
//!   names until its completion has been reaped, whether or not the future is still there:
//!   dropping a `WrFuture` (cancelling it) never deregisters or frees memory the stack or
//!   the peer may still touch, and the completion is still reaped (and counted in
//!   [`AsyncQueuePair::outstanding`]).
//!
//! The futures and the stream do the work of [`crate::Progress::Thread`] and
//! [`crate::Progress::Assisted`] queue pairs, whose bytes the device's event loop moves. A
//! [`crate::Progress::Poll`] queue pair moves bytes only while the application polls it, so
//! nothing would wake a task waiting for it; use it with the blocking calls.
//!
//! Other runtimes need no feature: every object with a descriptor implements
//! [`AsFd`](std::os::fd::AsFd) ([`CompletionChannel`], [`Listener`]), and a queue pair's
//! event descriptor comes from [`QueuePair::event_fd`], each readable while something waits to be taken with the non-blocking
//! calls ([`CompletionChannel::try_get_event`] with [`CompletionQueue::poll`],
//! [`Listener::try_get_request`], [`QueuePair::poll_event`]).

use crate::cq::{CompletionChannel, CompletionQueue, WorkCompletion};
use crate::error::{ConnectError, CreateError, Error, PostError, Result};
use crate::mem::{MemoryRegion, ProtectionDomain};
use crate::params::ConnParams;
use crate::qp::{QpCap, QpInit, QueuePair};
use crate::setup::passive::{ConnectRequest, Incoming, Listener};
use crate::sys::EventFd;
use crate::wr::{RecvWr, SendWr};
use ::tokio::io::unix::AsyncFd;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

impl QueuePair {
    /// Connects to `addr` and resolves once the connection is established, rejected or
    /// failed: [`connect`](Self::connect) without blocking. Nothing happens until the future
    /// is first polled; from then on the attempt runs on the event loop, and dropping the
    /// future does not stop it (its outcome arrives as a [`crate::QpEvent`], and
    /// [`established`](Self::established) awaits it again).
    ///
    /// # Errors
    /// As [`connect`](Self::connect): refused, rejected (with the peer's private data), timed
    /// out (the MPA timeout of `params`), MPA negotiation errors.
    ///
    /// `params` is copied: the future borrows only the queue pair.
    pub fn connect_async(
        &self,
        addr: SocketAddr,
        params: &ConnParams,
    ) -> impl Future<Output = Result<(), ConnectError>> + Send + '_ {
        let params = params.clone();
        async move {
            self.connect_start(addr, &params)?;
            self.established().await
        }
    }

    /// Resolves once connection setup has an outcome: `Ok` once established (even if closed
    /// since), the failure otherwise. For the passive side after
    /// [`ConnectRequest::accept`], or after [`connect_start`](Self::connect_start). A queue
    /// pair that never starts connecting never resolves.
    pub fn established(&self) -> Established<'_> {
        Established { qp: self }
    }
}

/// The future of [`QueuePair::established`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Established<'a> {
    qp: &'a QueuePair,
}

impl Future for Established<'_> {
    type Output = Result<(), ConnectError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.qp.inner.poll_connected(cx)
    }
}

impl Listener {
    /// The next iWARP connection request: [`get_request`](Self::get_request) without
    /// blocking. Cancellation-safe: a request leaves the queue only when the future returns
    /// it. On a shared listener, plain connections stay queued.
    ///
    /// # Errors
    /// [`Error::InvalidState`] once the listener is [closed](Self::close).
    pub async fn next_request(&self) -> Result<ConnectRequest> {
        match poll_fn(|cx| self.poll_take(cx, |i| matches!(i, Incoming::Iwarp(_)))).await? {
            Incoming::Iwarp(r) => Ok(r),
            Incoming::Plain(_) => unreachable!("filtered"),
        }
    }

    /// The next connection of either kind, in arrival order:
    /// [`get_incoming`](Self::get_incoming) without blocking. Cancellation-safe.
    ///
    /// # Errors
    /// [`Error::InvalidState`] once the listener is [closed](Self::close).
    pub async fn next_incoming(&self) -> Result<Incoming> {
        poll_fn(|cx| self.poll_take(cx, |_| true)).await
    }
}

impl ConnectRequest {
    /// Accepts onto `qp` ([`accept`](Self::accept), which never blocks) and resolves once the
    /// connection is established (with peer-to-peer mode, once the initiator's RTR has
    /// arrived). Dropping the future after the first poll leaves the connection to go on.
    ///
    /// # Errors
    /// [`Error::Accept`] as [`accept`](Self::accept); [`Error::Connect`] if the connection
    /// fails before it is established.
    ///
    /// `params` is copied: the future borrows only the queue pair.
    pub fn accept_async<'a>(
        self,
        qp: &'a QueuePair,
        params: &ConnParams,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        let params = params.clone();
        async move {
            self.accept(qp, &params)?;
            qp.established().await?;
            Ok(())
        }
    }
}

/// The completions of the completion queues that signal one [`CompletionChannel`], as a
/// [`Stream`](futures_core::Stream) of [`WorkCompletion`]s (it never ends), or with
/// [`next_completion`](Self::next_completion).
///
/// When every queue is empty, the stream arms each one ([`CompletionQueue::req_notify`]),
/// polls them once more (a completion may have come first), and waits for the channel's
/// descriptor, registered with tokio's [`AsyncFd`]. It takes every notification of the
/// channel: give a channel to one stream only, and do not arm or wait on it elsewhere.
///
/// Completions are taken from their queues one at a time, as they are returned, so dropping
/// the stream (or a `next_completion` future) loses none: whatever was not returned is still
/// in its queue.
#[derive(Debug)]
pub struct CompletionStream {
    channel: CompletionChannel,
    fd: AsyncFd<Arc<EventFd>>,
    cqs: Vec<CompletionQueue>,
    /// The queue polled first next time (round robin, so one busy queue cannot starve others).
    next: usize,
}

impl CompletionStream {
    /// A stream over `cqs`, which must all signal `channel`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a queue signals another channel or none;
    /// [`Error::Io`] if there is no tokio runtime with I/O enabled, or the descriptor cannot
    /// be registered (it is already, by another stream).
    pub fn new(channel: &CompletionChannel, cqs: &[CompletionQueue]) -> Result<Self> {
        for cq in cqs {
            if !cq.signals(channel) {
                return Err(Error::InvalidArgument(format!(
                    "completion queue {} does not signal this channel",
                    cq.id()
                )));
            }
        }
        let fd = crate::sys::async_eventfd(channel.eventfd())?;
        Ok(CompletionStream { channel: channel.clone(), fd, cqs: cqs.to_vec(), next: 0 })
    }

    /// Adds a queue that signals the same channel.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it signals another channel or none.
    pub fn add(&mut self, cq: &CompletionQueue) -> Result<()> {
        if !cq.signals(&self.channel) {
            return Err(Error::InvalidArgument(format!("completion queue {} does not signal this channel", cq.id())));
        }
        self.cqs.push(cq.clone());
        Ok(())
    }

    /// The queues this stream takes completions from.
    pub fn queues(&self) -> &[CompletionQueue] {
        &self.cqs
    }

    /// One completion from the first queue, in round-robin order, that has one.
    fn take_one(&mut self) -> Option<WorkCompletion> {
        let n = self.cqs.len();
        let mut wc = [WorkCompletion::default(); 1];
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.cqs[i].poll(&mut wc) == 1 {
                self.next = (i + 1) % n;
                return Some(wc[0]);
            }
        }
        None
    }

    /// The next completion, or `Pending` with the task registered for the channel's
    /// descriptor.
    pub fn poll_completion(&mut self, cx: &mut Context<'_>) -> Poll<WorkCompletion> {
        loop {
            if let Some(wc) = self.take_one() {
                return Poll::Ready(wc);
            }
            // Empty: arm every queue, then look once more, for a completion that came before
            // the arming (it fired no notification).
            for cq in &self.cqs {
                cq.req_notify(false);
            }
            if let Some(wc) = self.take_one() {
                return Poll::Ready(wc);
            }
            match self.fd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(mut guard)) => {
                    // Readiness is cleared before the descriptor is reset: a notification
                    // after the reset sets both again.
                    guard.clear_ready();
                    while self.channel.try_get_event().is_some() {}
                }
                Poll::Ready(Err(e)) => {
                    // Not expected of an eventfd; the queues are still polled, with a wake-up
                    // soon so that nothing is missed.
                    tracing::warn!(error = %e, "completion channel readiness failed");
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next completion of any of the queues. Cancellation-safe: a completion is taken
    /// from its queue only when it is returned.
    pub async fn next_completion(&mut self) -> WorkCompletion {
        poll_fn(|cx| self.poll_completion(cx)).await
    }
}

impl futures_core::Stream for CompletionStream {
    type Item = WorkCompletion;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WorkCompletion>> {
        self.get_mut().poll_completion(cx).map(Some)
    }
}

/// One posted request of an [`AsyncQueuePair`], from its post until its completion is reaped.
#[derive(Debug)]
struct Slot {
    /// The application's identifier, given back in the completion.
    wr_id: u64,
    /// Handles of the regions the request names, held until the completion is reaped (only
    /// held: dropping the slot releases them).
    #[allow(dead_code)]
    regions: Vec<MemoryRegion>,
    done: Option<WorkCompletion>,
    waker: Option<Waker>,
    /// The future was dropped: the completion is reaped and thrown away.
    abandoned: bool,
}

#[derive(Debug, Default)]
struct TrackerState {
    next_id: u64,
    slots: HashMap<u64, Slot>,
    /// The [`AsyncQueuePair`] was dropped: the reaper ends once nothing waits for a completion.
    closed: bool,
    reaper: Option<Waker>,
}

#[derive(Debug, Default)]
struct Tracker {
    state: Mutex<TrackerState>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a request about to be posted; its identifier on the queue pair.
    fn open(&self, wr_id: u64, regions: Vec<MemoryRegion>) -> u64 {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.slots.insert(id, Slot { wr_id, regions, done: None, waker: None, abandoned: false });
        id
    }

    /// The post failed: the request was never queued.
    fn cancel(&self, id: u64) {
        let slot = self.lock().slots.remove(&id);
        drop(slot);
    }

    /// A reaped completion: handed to its future, or, if that was dropped, released with its
    /// regions.
    fn complete(&self, mut wc: WorkCompletion) {
        let mut st = self.lock();
        let id = wc.wr_id;
        let Some(slot) = st.slots.get_mut(&id) else {
            tracing::debug!(wr_id = wc.wr_id, "completion of a request posted past the async queue pair");
            return;
        };
        wc.wr_id = slot.wr_id;
        if slot.abandoned {
            let slot = st.slots.remove(&id);
            drop(st);
            drop(slot);
            return;
        }
        slot.done = Some(wc);
        let waker = slot.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A queue pair for async code: each post returns a [`WrFuture`] that resolves with the
/// request's [`WorkCompletion`].
///
/// It has one completion queue for both its queues, on a channel of its own, and a task on
/// the tokio runtime (spawned by [`new`](Self::new)) that reaps every completion and hands
/// it to its future. Every posted request is signaled (a future needs its completion);
/// completions carry the `wr_id` the request was built with.
///
/// **Memory.** From its post until its completion is reaped, the queue pair holds a handle of
/// every region the request names, independently of the future: dropping a `WrFuture`
/// before it resolves never deregisters a region the stack may still read or place into,
/// nor one whose STag the peer may still use for this request, even if the application drops
/// its own handles too; the region goes once the completion is reaped. (Region-owned memory
/// is also kept alive by the request itself, see the crate's memory model; the handle keeps
/// the STag valid and caller-owned memory registered.)
///
/// **Dropping** the `AsyncQueuePair` disconnects it: outstanding requests complete flushed,
/// the reaper reaps them, releases their regions, and ends.
///
/// Post only through this type: a request posted on [`queue_pair`](Self::queue_pair)
/// directly completes on the same queue, where the reaper finds no future for it and drops
/// the completion.
#[derive(Debug)]
pub struct AsyncQueuePair {
    qp: QueuePair,
    cq: CompletionQueue,
    tracker: Arc<Tracker>,
}

impl AsyncQueuePair {
    /// A queue pair in `pd` with the queue sizes `cap`, driven by the device's event loop
    /// ([`crate::Progress::Thread`]). Must be called within a tokio runtime with I/O enabled
    /// (the reaper is spawned on it).
    ///
    /// # Errors
    /// [`Error::Create`] as [`ProtectionDomain::create_qp`]; [`Error::Io`] outside a tokio
    /// runtime, or if a descriptor cannot be created or registered.
    pub fn new(pd: &ProtectionDomain, cap: QpCap) -> Result<Self> {
        let rt = ::tokio::runtime::Handle::try_current().map_err(|e| io::Error::other(e.to_string()))?;
        let channel = CompletionChannel::new()?;
        let cqe = cap.max_send_wr + cap.max_recv_wr;
        let cq = CompletionQueue::new(&pd.dev, cqe, Some(&channel))?;
        let mut init = QpInit::new(&cq, &cq);
        init.cap = cap;
        let qp = pd.create_qp(&init).map_err(|e: CreateError| Error::Create(e))?;
        let stream = CompletionStream::new(&channel, std::slice::from_ref(&cq))?;
        let tracker = Arc::new(Tracker::default());
        rt.spawn(reap(Arc::clone(&tracker), stream, qp.clone()));
        Ok(AsyncQueuePair { qp, cq, tracker })
    }

    /// The queue pair (state, addresses, negotiated parameters, events). Post through
    /// `self`, not through it (see the type's docs).
    pub fn queue_pair(&self) -> &QueuePair {
        &self.qp
    }

    /// The completion queue of both queues (reaped by this queue pair's task: do not poll it).
    pub fn completion_queue(&self) -> &CompletionQueue {
        &self.cq
    }

    /// Connects to `addr` ([`QueuePair::connect_async`]).
    ///
    /// # Errors
    /// As [`QueuePair::connect_async`].
    pub fn connect(
        &self,
        addr: SocketAddr,
        params: &ConnParams,
    ) -> impl Future<Output = Result<(), ConnectError>> + Send + '_ {
        self.qp.connect_async(addr, params)
    }

    /// Accepts `req` onto this queue pair ([`ConnectRequest::accept_async`]).
    ///
    /// # Errors
    /// As [`ConnectRequest::accept_async`].
    pub fn accept(&self, req: ConnectRequest, params: &ConnParams) -> impl Future<Output = Result<()>> + Send + '_ {
        req.accept_async(&self.qp, params)
    }

    /// Posts a send work request ([`QueuePair::post_send`]): it starts at once, whether or
    /// not the returned future is polled, which resolves with its completion.
    ///
    /// # Errors
    /// As [`QueuePair::post_send`] (then nothing was posted).
    pub fn post_send(&self, wr: &SendWr<'_>) -> Result<WrFuture, PostError> {
        let id = self.tracker.open(wr.wr_id(), wr.regions());
        match self.qp.post_send(std::slice::from_ref(&wr.tracked(id))) {
            Ok(()) => Ok(WrFuture { tracker: Arc::clone(&self.tracker), id }),
            Err(e) => {
                self.tracker.cancel(id);
                Err(e)
            }
        }
    }

    /// Posts a receive work request ([`QueuePair::post_recv`]); the future resolves with its
    /// completion (a Send or Immediate Data arrived, or the request was flushed).
    ///
    /// # Errors
    /// As [`QueuePair::post_recv`] (then nothing was posted).
    pub fn post_recv(&self, wr: &RecvWr<'_>) -> Result<WrFuture, PostError> {
        let id = self.tracker.open(wr.wr_id, wr.regions());
        let tracked = RecvWr { wr_id: id, sges: wr.sges.clone() };
        match self.qp.post_recv(std::slice::from_ref(&tracked)) {
            Ok(()) => Ok(WrFuture { tracker: Arc::clone(&self.tracker), id }),
            Err(e) => {
                self.tracker.cancel(id);
                Err(e)
            }
        }
    }

    /// Requests posted whose completion has not been reaped yet (their futures dropped or
    /// not). Each holds its regions until then.
    pub fn outstanding(&self) -> usize {
        self.tracker.lock().slots.values().filter(|s| s.done.is_none()).count()
    }

    /// Gracefully disconnects ([`QueuePair::disconnect`]); outstanding requests complete.
    pub fn disconnect(&self) {
        self.qp.disconnect();
    }
}

impl Drop for AsyncQueuePair {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.tracker.lock();
            st.closed = true;
            st.reaper.take()
        };
        // Outstanding work completes flushed (an idle queue pair flushes its receives at once).
        self.qp.disconnect();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The reaper of an [`AsyncQueuePair`]: takes every completion from its queue and hands it
/// over, until the queue pair is dropped and nothing waits for a completion. Holds a handle
/// of the queue pair until then, so the connection outlives the requests on it.
async fn reap(tracker: Arc<Tracker>, mut stream: CompletionStream, qp: QueuePair) {
    loop {
        let next = poll_fn(|cx| {
            {
                let mut st = tracker.lock();
                if st.closed && st.slots.values().all(|s| s.done.is_some()) {
                    return Poll::Ready(None);
                }
                st.reaper = Some(cx.waker().clone());
            }
            stream.poll_completion(cx).map(Some)
        })
        .await;
        match next {
            Some(wc) => tracker.complete(wc),
            None => break,
        }
    }
    tracing::trace!(qp = qp.qp_num(), "async queue pair reaped");
    drop(qp);
}

/// The completion of one request posted on an [`AsyncQueuePair`]. Dropping it cancels only
/// the wait: the request goes on, its regions stay held until its completion is reaped.
#[derive(Debug)]
#[must_use = "the request is posted; dropping the future only stops waiting for its completion"]
pub struct WrFuture {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Future for WrFuture {
    type Output = WorkCompletion;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WorkCompletion> {
        let mut st = self.tracker.lock();
        // The slot lives until the poll that returns its completion (or the drop): polling
        // again after `Ready` breaks the `Future` contract.
        let Some(slot) = st.slots.get_mut(&self.id) else { panic!("WrFuture polled after it completed") };
        if let Some(wc) = slot.done {
            let slot = st.slots.remove(&self.id);
            drop(st);
            drop(slot);
            return Poll::Ready(wc);
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for WrFuture {
    fn drop(&mut self) {
        let mut st = self.tracker.lock();
        let released = match st.slots.get_mut(&self.id) {
            // Completed and reaped, not yet returned: nothing is in flight any more.
            Some(slot) if slot.done.is_some() => st.slots.remove(&self.id),
            // Still in flight: the slot (and its regions) stays until the reaper takes the
            // completion.
            Some(slot) => {
                slot.abandoned = true;
                slot.waker = None;
                None
            }
            None => None,
        };
        drop(st);
        drop(released);
    }
}
