//! Event-loop threads: each owns an epoll instance (through mio) and drives whatever is
//! registered with it: it knows only "something is ready" ([`Ready`]), not what listeners,
//! half-open connections or queue pairs are. Not a thread per queue pair: a worker serves any
//! number of them, each bounding the work it does before the next runs.

use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::cell::Cell;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);

/// Bytes a scratch read takes at most (per thread, shared by every connection it drives).
pub(crate) const SCRATCH_LEN: usize = 64 << 10;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN + iwarp_proto::qp::LOOKAHEAD]);
}

/// Runs `f` with this thread's scratch buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// What the event loop drives. Readiness of its socket, or a timer it set, is reported to
/// [`on_ready`](Ready::on_ready), which returns `true` if input remains beyond the work it
/// allows itself per turn (then it runs again after the others have had theirs).
pub(crate) trait Ready: Send + Sync {
    fn on_ready(self: Arc<Self>, worker: &Arc<WorkerShared>, token: Token) -> bool;
}

/// What a token names.
#[derive(Clone)]
pub(crate) enum Entry {
    /// Kept alive by its registration (a half-open connection, a lingering socket).
    Owned(Arc<dyn Ready>),
    /// Driven only while its owner keeps it alive (a listener, a queue pair).
    Held(Weak<dyn Ready>),
}

/// How long a closed connection's socket is drained waiting for the peer's FIN.
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// A closed connection's socket after our FIN: what still arrives is read and dropped until
/// the peer's FIN (or [`LINGER`]). Closing a socket with unread bytes makes Linux reset the
/// connection, which throws away what is still queued to send and fails the peer's own
/// sends in flight (a siw peer completes its last Write with an error).
pub(crate) struct Linger {
    sock: Mutex<Option<mio::net::TcpStream>>,
    /// Bytes still to send before our FIN ([`linger_after`]); empty once the FIN is queued.
    out: Mutex<Vec<u8>>,
    deadline: Instant,
}

impl Ready for Linger {
    fn on_ready(self: Arc<Self>, shared: &Arc<WorkerShared>, token: Token) -> bool {
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sock) = guard.as_mut() else { return false };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if !out.is_empty() {
            let flushed = loop {
                match io::Write::write(sock, &out) {
                    Ok(n) => {
                        out.drain(..n);
                        if out.is_empty() {
                            break Some(true);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Room comes with the writable edge (or the deadline ends it).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        break if Instant::now() >= self.deadline { None } else { Some(false) }
                    }
                    Err(_) => break None,
                }
            };
            match flushed {
                Some(true) => {
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                }
                Some(false) => return false,
                None => {
                    out.clear();
                    if let Some(mut s) = guard.take() {
                        shared.remove(token, &mut s);
                    }
                    return false;
                }
            }
        }
        drop(out);
        let done = with_scratch(|buf| loop {
            match io::Read::read(sock, buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Instant::now() >= self.deadline,
                Err(_) => break true,
            }
        });
        if done {
            if let Some(mut s) = guard.take() {
                shared.remove(token, &mut s);
            }
        }
        false
    }
}

/// Hands a connection whose FIN is queued (`shutdown(Write)` done) to a worker, which drains it
/// until the peer closes too. `reg` is the connection's registration with `worker`, if any (an
/// application-driven queue pair has none: the socket is registered afresh).
pub(crate) fn linger(worker: &Arc<WorkerShared>, reg: Option<Token>, sock: mio::net::TcpStream) {
    linger_inner(worker, reg, sock, Vec::new());
}

/// As [`linger`] for a connection that still has `out` to send: the worker sends it as room
/// comes (the registration `reg` must include writable readiness), then queues our FIN
/// (`shutdown(Write)`) and drains as [`linger`] does, all within [`LINGER`]. With `out`
/// empty the FIN is queued here.
pub(crate) fn linger_after(worker: &Arc<WorkerShared>, reg: Token, sock: mio::net::TcpStream, out: Vec<u8>) {
    if out.is_empty() {
        let _ = sock.shutdown(std::net::Shutdown::Write);
    }
    linger_inner(worker, Some(reg), sock, out);
}

fn linger_inner(worker: &Arc<WorkerShared>, reg: Option<Token>, mut sock: mio::net::TcpStream, out: Vec<u8>) {
    let deadline = Instant::now() + LINGER;
    let l = Arc::new(Linger { sock: Mutex::new(None), out: Mutex::new(out), deadline });
    let token = match reg {
        Some(t) => {
            worker.retarget(t, Entry::Owned(Arc::clone(&l) as Arc<dyn Ready>));
            t
        }
        None => match worker.add(Entry::Owned(Arc::clone(&l) as Arc<dyn Ready>), &mut sock, Interest::READABLE) {
            Ok(t) => t,
            // No registration, no draining: the socket closes now.
            Err(_) => return,
        },
    };
    *l.sock.lock().unwrap_or_else(|e| e.into_inner()) = Some(sock);
    worker.schedule(token);
    worker.add_timer(deadline, token);
}

pub(crate) struct WorkerShared {
    registry: Registry,
    waker: Waker,
    entries: Mutex<HashMap<usize, Entry>>,
    timers: Mutex<BinaryHeap<Reverse<(Instant, usize)>>>,
    next_token: AtomicUsize,
    stop: AtomicBool,
}

impl std::fmt::Debug for WorkerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerShared").finish_non_exhaustive()
    }
}

impl WorkerShared {
    /// Registers `source` (edge-triggered) under a fresh token naming `entry`.
    pub(crate) fn add(
        &self,
        entry: Entry,
        source: &mut impl mio::event::Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let token = Token(self.next_token.fetch_add(1, Ordering::Relaxed));
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).insert(token.0, entry);
        if let Err(e) = self.registry.register(source, token, interest) {
            self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&token.0);
            return Err(e);
        }
        Ok(token)
    }

    /// Points `token` at another entry (a half-open connection becoming a queue pair).
    pub(crate) fn retarget(&self, token: Token, entry: Entry) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).insert(token.0, entry);
        // An edge may have fired while the entry changed: look again.
        self.schedule(token);
    }

    /// Deregisters `source` and forgets `token`.
    pub(crate) fn remove(&self, token: Token, source: &mut impl mio::event::Source) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&token.0);
        let _ = self.registry.deregister(source);
    }

    /// Runs `token`'s handler on the next loop iteration.
    pub(crate) fn schedule(&self, token: Token) {
        self.add_timer(Instant::now(), token);
    }

    /// Calls `token`'s handler at `deadline`.
    pub(crate) fn add_timer(&self, deadline: Instant, token: Token) {
        self.timers.lock().unwrap_or_else(|e| e.into_inner()).push(Reverse((deadline, token.0)));
        let _ = self.waker.wake();
    }
}

/// One event-loop thread.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) shared: Arc<WorkerShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    pub(crate) fn spawn(index: usize, spin: std::time::Duration) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(WorkerShared {
            registry: poll.registry().try_clone()?,
            waker,
            entries: Mutex::new(HashMap::new()),
            timers: Mutex::new(BinaryHeap::new()),
            next_token: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread =
            std::thread::Builder::new().name(format!("iwarp-worker-{index}")).spawn(move || run(poll, &s, spin))?;
        Ok(Worker { shared, thread: Mutex::new(Some(thread)) })
    }

    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // The last handle may be dropped on the worker itself (a queue pair released there).
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn run(mut poll: Poll, shared: &Arc<WorkerShared>, spin: std::time::Duration) {
    let mut events = Events::with_capacity(1024);
    let mut ready: VecDeque<usize> = VecDeque::new();
    // Keep polling without sleeping until then (adaptive spinning after activity).
    let mut spin_until = Instant::now();
    // One clock read per turn: where the clock source is not the TSC (an emulated guest's
    // HPET) a read is a system call, as dear as the poll itself.
    let mut now = Instant::now();
    loop {
        let timeout = if !ready.is_empty() || now < spin_until {
            Some(Duration::ZERO)
        } else {
            let t = shared.timers.lock().unwrap_or_else(|e| e.into_inner());
            t.peek().map(|Reverse((d, _))| d.saturating_duration_since(now))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "worker poll failed");
                return;
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        now = Instant::now();
        let mut handled = 0usize;
        for ev in events.iter() {
            if ev.token() != WAKER {
                handled += 1;
                READ_CLOSED.with(|c| c.set(ev.is_read_closed() || ev.is_error()));
                dispatch(shared, ev.token().0, &mut ready);
            }
        }
        READ_CLOSED.with(|c| c.set(false));
        // Spin on after activity. Also after events whose queue pair an application thread
        // was driving (assisted progress): a loop that slept then would be woken for the
        // next one, and each wake-up takes a core from a busy thread (ib_read_lat under the
        // verbs library: 1.21-1.31x iwperf's latency with the loop sleeping, 1.06-1.08x
        // spinning; BENCHMARKS.md).
        if !spin.is_zero() && handled > 0 {
            spin_until = now + spin;
        }
        // Connections that still had input after their budget.
        for _ in 0..ready.len() {
            if let Some(t) = ready.pop_front() {
                dispatch(shared, t, &mut ready);
            }
        }
        // Timers (and scheduled runs); the clock as read after the poll.
        let due: Vec<usize> = {
            let mut t = shared.timers.lock().unwrap_or_else(|e| e.into_inner());
            let mut due = Vec::new();
            while let Some(Reverse((d, tok))) = t.peek() {
                if *d > now {
                    break;
                }
                due.push(*tok);
                t.pop();
            }
            due
        };
        for tok in due {
            dispatch(shared, tok, &mut ready);
        }
    }
}

thread_local! {
    /// Whether the event being dispatched reports the peer's end of stream or an error
    /// ([`read_closed`]).
    static READ_CLOSED: Cell<bool> = const { Cell::new(false) };
}

/// For a handler on the event loop: the readiness event it is called for says the peer
/// closed its side (`EPOLLRDHUP`) or the socket has an error. `false` elsewhere.
pub(crate) fn read_closed() -> bool {
    READ_CLOSED.with(Cell::get)
}

fn dispatch(shared: &Arc<WorkerShared>, token: usize, ready: &mut VecDeque<usize>) {
    let entry = shared.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&token).cloned();
    let more = match entry {
        None => false,
        Some(Entry::Owned(r)) => r.on_ready(shared, Token(token)),
        Some(Entry::Held(w)) => w.upgrade().is_some_and(|r| r.on_ready(shared, Token(token))),
    };
    if more && !ready.contains(&token) {
        ready.push_back(token);
    }
}
