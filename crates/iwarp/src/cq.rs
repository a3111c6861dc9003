//! Completion queues and completion channels.

use crate::error::Result;
use crate::shared::DeviceInner;
use crate::sys::EventFd;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

pub use iwarp_proto::qp::{WcOpcode, WcStatus};

/// A work completion: the engine's own record of it ([`iwarp_proto::qp::Completion`]), as
/// the completion queue hands it over.
pub type WorkCompletion = iwarp_proto::qp::Completion;

/// A queue pair the application drives ([`crate::Progress::Poll`]) or helps drive
/// ([`crate::Progress::Assisted`]): polling or waiting on a completion queue it completes on
/// moves its bytes.
pub(crate) trait Polled: Send + Sync {
    /// Moves the connection's bytes if no other thread is doing so (never waits for it);
    /// `true` if an assisted queue pair's turn moved some.
    fn progress(&self) -> bool;
    /// The socket to sleep on, and whether to wait for room to write too.
    fn wait_fd(&self) -> Option<(RawFd, bool)>;
    /// Writes requests held back from a burst of posts, if any (see
    /// [`crate::conn::Conn::post_send`]).
    fn flush_held(&self) {}
}

/// The most [`crate::Progress::Assisted`] queue pairs a completion queue's empty polls drive;
/// beyond that each empty poll would cost a system call per queue pair, and the event loop
/// serves them all.
pub(crate) const ASSIST_MAX: usize = 8;

const ARM_NONE: u8 = 0;
const ARM_NEXT: u8 = 1;
const ARM_SOLICITED: u8 = 2;

#[derive(Debug)]
pub(crate) struct ChannelInner {
    /// Shared, so that a runtime's registration can hold it open as long as it lasts.
    fd: Arc<EventFd>,
    ready: Mutex<VecDeque<u32>>,
    /// `get_event` callers sleeping on `cond` (registered under `ready`'s lock).
    waiters: AtomicUsize,
    cond: Condvar,
    /// Set once the descriptor was handed out (`AsFd`, `AsRawFd`, a runtime's
    /// registration): from then on every notification also signals it. Until then
    /// `get_event` waits on `cond` and nothing writes or reads the descriptor, which saves a
    /// notification and a reset (two system calls) per wake-up.
    exported: AtomicBool,
}

impl ChannelInner {
    /// Queues `id`'s notification and wakes whoever waits: `get_event` callers, and the
    /// descriptor once handed out.
    fn signal(&self, id: u32) {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).push_back(id);
        // After the push's unlock: a waiter that found the queue empty registered itself
        // under the lock before sleeping, so it is counted here.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cond.notify_all();
        }
        if self.exported.load(Ordering::Acquire) {
            self.fd.notify();
        }
    }
}

/// A completion channel: a descriptor that becomes readable when an armed completion queue gets
/// a completion, for use with your own epoll or async runtime. Any number of completion
/// queues may signal one channel ([`Device::create_cq_with_channel`](crate::Device::create_cq_with_channel)).
///
/// With a runtime of your own, register the descriptor ([`AsFd`]) for readability and
/// follow the verbs' pattern: arm each queue ([`CompletionQueue::req_notify`]), poll it once
/// more (a completion may have come before the arming), and when the descriptor becomes
/// readable, take the queues that fired with [`try_get_event`](Self::try_get_event) (which
/// also resets the descriptor) and poll them again. The descriptor stays readable until it
/// is reset, so it suits edge- and level-triggered polling alike. With the `tokio` feature,
/// `iwarp::async_tokio::CompletionStream` does all this.
#[derive(Debug, Clone)]
pub struct CompletionChannel {
    inner: Arc<ChannelInner>,
}

impl CompletionChannel {
    pub(crate) fn new() -> Result<Self> {
        Ok(CompletionChannel {
            inner: Arc::new(ChannelInner {
                fd: Arc::new(EventFd::new()?),
                ready: Mutex::new(VecDeque::new()),
                waiters: AtomicUsize::new(0),
                cond: Condvar::new(),
                exported: AtomicBool::new(false),
            }),
        })
    }

    /// The descriptor, for a runtime's registration.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn eventfd(&self) -> Arc<EventFd> {
        self.export();
        Arc::clone(&self.inner.fd)
    }

    /// The next notification, if one is queued: the id of the completion queue that fired.
    /// Never waits. Resets the descriptor's readability first, so a notification queued
    /// after this call makes it readable again.
    pub fn try_get_event(&self) -> Option<u32> {
        if self.inner.exported.load(Ordering::Acquire) {
            self.inner.fd.drain();
        }
        self.inner.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// The next notification: the id of the completion queue that fired. Waits up to
    /// `timeout` (`None`: forever).
    pub fn get_event(&self, timeout: Option<Duration>) -> Option<u32> {
        if !self.inner.exported.load(Ordering::Acquire) {
            return self.get_event_in_process(timeout);
        }
        // The clock is read only when there is nothing to return (as in `CompletionQueue::wait`).
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if let Some(id) = self.inner.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                return Some(id);
            }
            self.inner.fd.drain();
            if let Some(id) = self.inner.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                return Some(id);
            }
            let left = match *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t)) {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return None,
                },
                None => None,
            };
            let _ = crate::sys::poll_readable(&[self.inner.fd.as_raw_fd()], left);
        }
    }

    /// `get_event` while the descriptor was never handed out: sleeps on the condition
    /// variable (the descriptor is neither signalled nor reset). A descriptor handed out
    /// meanwhile is signalled as well from then on, and this still wakes.
    fn get_event_in_process(&self, timeout: Option<Duration>) -> Option<u32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut ready = self.inner.ready.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(id) = ready.pop_front() {
                return Some(id);
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => l,
                    _ => return None,
                },
                None => Duration::from_secs(3600),
            };
            self.inner.waiters.fetch_add(1, Ordering::SeqCst);
            ready = self.inner.cond.wait_timeout(ready, left).unwrap_or_else(|e| e.into_inner()).0;
            self.inner.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn export(&self) {
        self.inner.exported.store(true, Ordering::Release);
    }

    /// The next notification if one is queued, without reading or waiting on the descriptor
    /// (unlike [`try_get_event`](Self::try_get_event), which resets its readability).
    ///
    /// For callers that wait on the descriptor themselves (a blocking `read(2)` of it, whose
    /// interruption by a signal they report, as rdma-core's `ibv_get_cq_event` does): each
    /// notification is queued before the descriptor is signalled, so after the descriptor
    /// became readable this finds it. The descriptor may stay readable after this took the
    /// last notification; reading it then returns at once, and the next call finds nothing.
    pub fn pop_event(&self) -> Option<u32> {
        self.inner.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

impl AsRawFd for CompletionChannel {
    /// Readable while a notification is queued (see the type's docs).
    fn as_raw_fd(&self) -> RawFd {
        self.export();
        self.inner.fd.as_raw_fd()
    }
}

impl AsFd for CompletionChannel {
    /// Readable while a notification is queued (see the type's docs).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.export();
        self.inner.fd.as_fd()
    }
}

pub(crate) struct CqInner {
    pub(crate) id: u32,
    queue: Mutex<VecDeque<WorkCompletion>>,
    /// `queue.len()` as of the last push or pop (written under the queue's lock), so that an
    /// empty poll, the common case of busy polling, takes no lock.
    queued: AtomicUsize,
    cond: Condvar,
    waiters: AtomicUsize,
    armed: AtomicU8,
    channel: Option<Arc<ChannelInner>>,
    polled: Mutex<Vec<Weak<dyn Polled>>>,
    has_polled: AtomicBool,
    /// The [`crate::Progress::Assisted`] queue pairs, and whether an empty poll drives them
    /// (some are attached, and no more than [`ASSIST_MAX`]).
    assisted: Mutex<Vec<Weak<dyn Polled>>>,
    has_assisted: AtomicBool,
    wake: EventFd,
}

impl std::fmt::Debug for CqInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqInner").field("id", &self.id).finish()
    }
}

impl CqInner {
    /// Adds completions; wakes waiters and fires an armed notification. Takes the lock only
    /// if `items` yields one.
    pub(crate) fn push(&self, items: impl IntoIterator<Item = WorkCompletion>) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return;
        }
        let mut fire = false;
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let armed = self.armed.load(Ordering::Relaxed);
            for c in items {
                fire |= match armed {
                    ARM_NEXT => true,
                    ARM_SOLICITED => c.solicited || c.status != WcStatus::Success,
                    _ => false,
                };
                q.push_back(c);
            }
            self.queued.store(q.len(), Ordering::Release);
        }
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.cond.notify_all();
            // Only a waiter of a queue with Progress::Poll queue pairs sleeps in poll(2) on the
            // wake-up descriptor (`wait`); the others sleep on the condition variable, and a
            // write to the descriptor would be a system call per completion for nothing.
            // `has_polled` is set before any waiter can choose poll(2).
            if self.has_polled.load(Ordering::Acquire) {
                self.wake.notify();
            }
        }
        if fire && self.armed.swap(ARM_NONE, Ordering::AcqRel) != ARM_NONE {
            if let Some(ch) = &self.channel {
                ch.signal(self.id);
            }
        }
    }

    pub(crate) fn attach_polled(&self, qp: Weak<dyn Polled>) {
        let mut p = self.polled.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|w| w.strong_count() > 0 && !w.ptr_eq(&qp));
        p.push(qp);
        self.has_polled.store(true, Ordering::Release);
    }

    pub(crate) fn attach_assisted(&self, qp: Weak<dyn Polled>) {
        let mut p = self.assisted.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|w| w.strong_count() > 0 && !w.ptr_eq(&qp));
        p.push(qp);
        self.has_assisted.store(p.len() <= ASSIST_MAX, Ordering::Release);
    }

    /// Whether empty polls of this queue drive its [`crate::Progress::Assisted`] queue pairs.
    pub(crate) fn assists(&self) -> bool {
        self.has_assisted.load(Ordering::Acquire)
    }

    /// Calls `f` on each live [`crate::Progress::Assisted`] queue pair of this queue.
    fn each_assisted(&self, mut f: impl FnMut(&dyn Polled)) {
        for w in self.assisted.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(qp) = w.upgrade() {
                f(&*qp);
            }
        }
    }

    /// One turn of each assisted queue pair (those busy in another thread are skipped);
    /// `true` if one moved bytes.
    fn assist(&self) -> bool {
        let mut moved = false;
        self.each_assisted(|qp| moved |= qp.progress());
        moved
    }

    fn pop(&self, out: &mut [WorkCompletion]) -> usize {
        if self.queued.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = out.len().min(q.len());
        for (slot, c) in out.iter_mut().zip(q.drain(..n)) {
            *slot = c;
        }
        self.queued.store(q.len(), Ordering::Release);
        n
    }

    /// Drives the manual-progress queue pairs attached to this queue; returns their sockets.
    fn progress_polled(&self, mut fds: Option<&mut Vec<(RawFd, bool)>>) {
        // Under the list's lock, without collecting: this runs on every empty poll of a
        // busy-polling application. Each queue pair is only try-locked, so a queue pair busy
        // in another thread is skipped rather than waited for.
        let p = self.polled.lock().unwrap_or_else(|e| e.into_inner());
        for w in p.iter() {
            let Some(qp) = w.upgrade() else { continue };
            qp.progress();
            if let Some(f) = fds.as_deref_mut() {
                if let Some(fd) = qp.wait_fd() {
                    f.push(fd);
                }
            }
        }
    }
}

/// A completion queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CompletionQueue {
    pub(crate) inner: Arc<CqInner>,
}

impl CompletionQueue {
    pub(crate) fn new(dev: &Arc<DeviceInner>, cqe: usize, channel: Option<&CompletionChannel>) -> Result<Self> {
        Ok(CompletionQueue {
            inner: Arc::new(CqInner {
                id: dev.next_id(),
                queue: Mutex::new(VecDeque::with_capacity(cqe.min(1 << 16))),
                queued: AtomicUsize::new(0),
                cond: Condvar::new(),
                waiters: AtomicUsize::new(0),
                armed: AtomicU8::new(ARM_NONE),
                channel: channel.map(|c| Arc::clone(&c.inner)),
                polled: Mutex::new(Vec::new()),
                has_polled: AtomicBool::new(false),
                assisted: Mutex::new(Vec::new()),
                has_assisted: AtomicBool::new(false),
                wake: EventFd::new()?,
            }),
        })
    }

    /// `true` if this queue signals `channel`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn signals(&self, channel: &CompletionChannel) -> bool {
        self.inner.channel.as_ref().is_some_and(|c| Arc::ptr_eq(c, &channel.inner))
    }

    /// This queue's id (what [`CompletionChannel::get_event`] returns).
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// Moves up to `out.len()` completions into `out`; returns how many. Never blocks. For
    /// queue pairs created with [`crate::Progress::Poll`], this call also drives their I/O,
    /// and for those created with [`crate::Progress::Assisted`] it does when the queue is
    /// empty.
    pub fn poll(&self, out: &mut [WorkCompletion]) -> usize {
        self.poll_progress(out).0
    }

    /// [`poll`](Self::poll), and whether this call found work for a
    /// [`crate::Progress::Assisted`] queue pair (received an FPDU, wrote to the socket, or
    /// has framed bytes waiting for room in it): a busy-polling caller that got no completion
    /// but has such work is not idle.
    pub fn poll_progress(&self, out: &mut [WorkCompletion]) -> (usize, bool) {
        let n = self.inner.pop(out);
        if n > 0 {
            return (n, false);
        }
        let polled = self.inner.has_polled.load(Ordering::Acquire);
        let assisted = self.inner.has_assisted.load(Ordering::Acquire);
        if !polled && !assisted {
            return (0, false);
        }
        if polled {
            self.inner.progress_polled(None);
        }
        let moved = assisted && self.inner.assist();
        (self.inner.pop(out), moved)
    }

    /// Like [`poll`](Self::poll), but waits up to `timeout` (`None`: forever) for at least one
    /// completion. Returns 0 on timeout.
    pub fn wait(&self, out: &mut [WorkCompletion], timeout: Option<Duration>) -> usize {
        let left = |d: Option<Instant>| -> Option<Option<Duration>> {
            match d {
                None => Some(None),
                Some(d) => d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()).map(Some),
            }
        };
        // The clock is read only once the queue was found empty (a read is a system call where
        // the clock source is not the TSC).
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            let n = self.poll(out);
            if n > 0 {
                return n;
            }
            let d = *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
            let Some(rem) = left(d) else { return 0 };
            if self.inner.has_polled.load(Ordering::Acquire) {
                // Manual progress: sleep in poll(2) on the sockets (for writing too where bytes
                // wait for room) and the wake-up descriptor.
                let mut fds = vec![(self.inner.wake.as_raw_fd(), false)];
                self.inner.waiters.fetch_add(1, Ordering::AcqRel);
                self.inner.progress_polled(Some(&mut fds));
                let n = self.inner.pop(out);
                if n > 0 {
                    self.inner.waiters.fetch_sub(1, Ordering::AcqRel);
                    return n;
                }
                let _ = crate::sys::poll_fds(&fds, rem.map(|r| r.min(Duration::from_millis(100))));
                self.inner.waiters.fetch_sub(1, Ordering::AcqRel);
                self.inner.wake.drain();
            } else {
                let q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !q.is_empty() {
                    continue;
                }
                self.inner.waiters.fetch_add(1, Ordering::AcqRel);
                let wait = rem.unwrap_or(Duration::from_secs(3600));
                let _ = self.inner.cond.wait_timeout(q, wait);
                self.inner.waiters.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Moves the bytes of this queue's [`crate::Progress::Poll`] and
    /// [`crate::Progress::Assisted`] queue pairs from the calling thread, as an empty
    /// [`poll`](Self::poll) does, without taking completions: for a thread about to sleep on
    /// the completion channel, which may find its notification this way instead of being
    /// woken by the event loop. Never blocks (queue pairs busy in another thread are skipped).
    pub fn drive(&self) {
        if self.inner.has_polled.load(Ordering::Acquire) {
            self.inner.progress_polled(None);
        }
        if self.inner.has_assisted.load(Ordering::Acquire) {
            self.inner.assist();
        }
    }

    /// Arms a notification on the completion channel for the next completion
    /// (`solicited_only`: the next solicited or failed one). One notification per arming.
    ///
    /// An application arms the queue before it sleeps: requests its queue pairs held back
    /// from a burst of posts are written now.
    pub fn req_notify(&self, solicited_only: bool) {
        self.inner.armed.store(if solicited_only { ARM_SOLICITED } else { ARM_NEXT }, Ordering::Release);
        if self.inner.assists() {
            self.inner.each_assisted(|qp| qp.flush_held());
        }
    }

    /// Completions waiting to be polled.
    pub fn len(&self) -> usize {
        self.inner.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// `true` if no completion waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
