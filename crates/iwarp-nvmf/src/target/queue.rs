//! One queue (admin or I/O): its queue pair, receive slots for command capsules, registered
//! data buffers, and the command state machine.
//!
//! Receive slot `i` holds one command capsule (64 bytes plus in-capsule data). A command keeps
//! its slot until it completes (in-capsule write data is written to the device straight from
//! it); the slot is re-posted just before the completion is sent. Data buffers are registered
//! once and reused: a Read's data is read from the device into one and RDMA-Written from it,
//! a keyed Write's data is RDMA-Read into one and written to the device from it. A buffer is
//! free again when the completion Send that follows its transfer has completed.

use super::ctrl::{Controller, Subsystem, NSID};
use super::QueueRequest;
use crate::wire::{
    self, admin_opcode, cns, feature, io_opcode, log_page, Command, Completion, ConnectData, Fabrics, Sgl, Status,
    CNTLID_DYNAMIC, CONNECT_DATA_LEN, IDENTIFY_LEN, SQE_LEN,
};
use iwarp::{
    Access, CompletionChannel, CompletionQueue, Device, MemoryRegion, OwnedRegion, ProtectionDomain, QpCap, QpEvent,
    QpInit, QueuePair, RecvWr, RemoteAddr, SendWr, Stag, WcOpcode, WcStatus, WorkCompletion,
};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Work request ids: the kind in the top byte, an index below.
const KIND_RECV: u64 = 1 << 56;
const KIND_READ: u64 = 2 << 56;
const KIND_SEND: u64 = 3 << 56;
const KIND_WRITE: u64 = 4 << 56;
const INDEX_MASK: u64 = (1 << 56) - 1;
/// A completion Send without a data buffer to free.
const NO_BUF: u64 = INDEX_MASK;

/// A command waiting for its data to arrive by RDMA Read.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Connect { cmd: Command, buf: usize },
    Write { cmd: Command, buf: usize, offset: u64, len: usize },
}

/// What handling a command led to.
enum Outcome {
    /// Complete now with this status and result.
    Done(Status, u64),
    /// Complete after RDMA-Writing `len` bytes of data buffer `buf` to the command's SGL.
    DoneWithData(usize, usize),
    /// The command waits (an RDMA Read is under way).
    Waiting,
    /// Held without completion (Asynchronous Event Request).
    Held,
    /// No data buffer free: retry when one is.
    NoBuffer,
    /// The queue must end.
    Fatal,
}

pub(crate) struct Queue {
    sub: Arc<Subsystem>,
    pd: ProtectionDomain,
    cq: CompletionQueue,
    qp: QueuePair,
    qid: u16,
    entries: u16,
    slot_len: usize,
    recv: MemoryRegion,
    accept: [u8; wire::CM_ACCEPT_LEN],
    pending: Vec<Option<Pending>>,
    bufs: Vec<OwnedRegion<Vec<u8>>>,
    free: Vec<usize>,
    max_bufs: usize,
    buf_len: usize,
    /// Receive slots whose commands wait for a data buffer.
    deferred: VecDeque<(usize, u32)>,
    ctrl: Option<Arc<Controller>>,
    outstanding: usize,
    sqhd: u16,
    closing: bool,
    /// A queue without a successful Fabrics Connect by then is torn down.
    connect_by: Instant,
}

impl Queue {
    /// Creates the queue pair and posts its receives (before the accept, as iWARP needs).
    ///
    /// Its completion queue signals `channel`, and is armed: the first command's completion
    /// notifies it.
    pub fn create(
        sub: &Arc<Subsystem>,
        dev: &Device,
        q: QueueRequest,
        channel: &CompletionChannel,
    ) -> Result<Queue, iwarp::Error> {
        let entries = usize::from(q.entries);
        // One receive more than the queue's size: a host that overruns its queue is caught by
        // the count, not by the transport.
        let slots = entries + 1;
        let slot_len = SQE_LEN + if q.qid == 0 { CONNECT_DATA_LEN } else { sub.config.in_capsule_data as usize };
        let max_bufs = entries + 4;
        let pd = dev.alloc_pd();
        let cq = dev.create_cq_with_channel(slots + 3 * max_bufs + 8, channel)?;
        cq.req_notify(false);
        let cap = QpCap {
            max_send_wr: 3 * max_bufs + 8,
            max_recv_wr: slots,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 64,
        };
        let mut init = QpInit::new(&cq, &cq);
        init.cap = cap;
        let qp = pd.create_qp(&init)?;
        let recv = pd.reg_mr(slots * slot_len, Access::LOCAL_WRITE)?;
        {
            let wrs: Vec<RecvWr<'_>> =
                (0..slots).map(|i| RecvWr::new(KIND_RECV | i as u64, &[recv.sge(i * slot_len, slot_len)])).collect();
            qp.post_recv(&wrs)?;
        }
        let accept = wire::CmAccept { recfmt: wire::RECFMT, crqsize: q.entries }.to_bytes();
        let buf_len = sub.config.max_transfer().max(IDENTIFY_LEN).max(CONNECT_DATA_LEN);
        Ok(Queue {
            sub: Arc::clone(sub),
            pd,
            cq,
            qp,
            qid: q.qid,
            entries: q.entries,
            slot_len,
            recv,
            accept,
            pending: vec![None; slots],
            bufs: Vec::new(),
            free: Vec::new(),
            max_bufs,
            buf_len,
            deferred: VecDeque::new(),
            ctrl: None,
            outstanding: 0,
            sqhd: 0,
            closing: false,
            connect_by: Instant::now() + sub.config.connect_timeout,
        })
    }

    pub fn qp(&self) -> &QueuePair {
        &self.qp
    }

    pub fn accept_data(&self) -> &[u8] {
        &self.accept
    }

    /// The completion queue's id (what its channel's notifications name).
    pub fn cq_id(&self) -> u32 {
        self.cq.id()
    }

    /// `true` once the queue must end (the host disconnected, the controller ended, a
    /// protocol error): take it out of service and [`start_teardown`](Self::start_teardown).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Handles every completion queued, then re-arms the completion queue's notification and
    /// handles what came meanwhile (so that none is left without a notification). Call when
    /// the channel names this queue.
    pub fn service(&mut self, wcs: &mut [WorkCompletion]) {
        let mut armed = false;
        while !self.closing {
            let mut n = self.cq.poll(wcs);
            if n == 0 {
                if armed {
                    break;
                }
                self.cq.req_notify(false);
                armed = true;
                n = self.cq.poll(wcs);
                if n == 0 {
                    break;
                }
            }
            for wc in &wcs[..n] {
                self.handle_wc(wc);
                if self.closing {
                    break;
                }
            }
        }
    }

    /// What a queue checks now and then: connection events, the Connect deadline, its
    /// controller's end and (admin queue) keep-alive expiry.
    pub fn housekeeping(&mut self) {
        while let Some(ev) = self.qp.poll_event() {
            match ev {
                QpEvent::Established => {}
                other => {
                    tracing::debug!(qid = self.qid, "queue pair event {other:?}");
                    self.closing = true;
                }
            }
        }
        if self.ctrl.is_none() && Instant::now() > self.connect_by {
            tracing::info!(qid = self.qid, "no Connect in time: queue torn down");
            self.closing = true;
        }
        if let Some(c) = &self.ctrl {
            if c.is_dead() {
                tracing::debug!(qid = self.qid, cntlid = c.cntlid, "controller ended");
                self.closing = true;
            } else if self.qid == 0 && c.keep_alive_expired(Instant::now()) {
                tracing::info!(cntlid = c.cntlid, kato_ms = c.kato_ms(), "keep-alive timeout: controller torn down");
                self.closing = true;
            }
        }
    }

    /// Disconnects and detaches the queue from its controller (an admin queue ends the
    /// controller). Keep the queue until [`settled`](Self::settled), so that the disconnect's
    /// work completes before the regions go.
    pub fn start_teardown(&mut self) {
        self.closing = true;
        self.qp.disconnect();
        if let Some(c) = self.ctrl.take() {
            if self.qid == 0 {
                self.sub.remove_controller(&c);
            } else {
                c.queues.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.qid);
            }
        }
    }

    /// After [`start_teardown`](Self::start_teardown): takes completions (discarding them);
    /// `true` once none came for a while after `since`, or 200 ms passed.
    pub fn settled(&mut self, since: Instant, wcs: &mut [WorkCompletion]) -> bool {
        let n = self.cq.poll(wcs);
        let waited = since.elapsed();
        waited > std::time::Duration::from_millis(200) || (n == 0 && waited > std::time::Duration::from_millis(20))
    }

    fn fatal(&mut self, why: &str) {
        tracing::info!(qid = self.qid, "queue torn down: {why}");
        self.closing = true;
    }

    fn handle_wc(&mut self, wc: &WorkCompletion) {
        if wc.status != WcStatus::Success {
            if wc.status != WcStatus::WrFlush {
                tracing::info!(qid = self.qid, "{wc}");
            }
            self.closing = true;
            return;
        }
        let index = (wc.wr_id & INDEX_MASK) as usize;
        match wc.wr_id & !INDEX_MASK {
            KIND_RECV if wc.opcode == WcOpcode::Recv => self.on_command(index, wc.byte_len),
            KIND_READ => self.on_read_done(index),
            KIND_SEND => {
                if wc.wr_id & INDEX_MASK != NO_BUF && index < self.bufs.len() {
                    self.free.push(index);
                }
                while !self.free.is_empty() {
                    let Some((slot, len)) = self.deferred.pop_front() else { break };
                    self.dispatch(slot, len);
                }
            }
            KIND_WRITE => {}
            _ => self.fatal("unexpected completion"),
        }
    }

    fn command(&self, slot: usize) -> Option<Command> {
        let b = self.recv.bytes(slot * self.slot_len, SQE_LEN).ok()?;
        Command::from_bytes(&b).ok()
    }

    fn on_command(&mut self, slot: usize, len: u32) {
        if slot >= self.pending.len() {
            return self.fatal("receive of an unknown slot");
        }
        if (len as usize) < SQE_LEN {
            return self.fatal("capsule shorter than a command");
        }
        self.outstanding += 1;
        if self.outstanding > usize::from(self.entries) {
            return self.fatal("more commands outstanding than the queue has entries");
        }
        self.sqhd = (self.sqhd + 1) % self.entries;
        self.dispatch(slot, len);
    }

    fn dispatch(&mut self, slot: usize, len: u32) {
        let Some(cmd) = self.command(slot) else { return self.fatal("cannot read a capsule") };
        let outcome = self.execute(slot, len, &cmd);
        self.conclude(slot, len, &cmd, outcome);
    }

    fn conclude(&mut self, slot: usize, len: u32, cmd: &Command, outcome: Outcome) {
        match outcome {
            Outcome::Done(status, result) => self.complete(slot, cmd, status, result, None),
            Outcome::DoneWithData(buf, len) => self.complete(slot, cmd, Status::SUCCESS, 0, Some((buf, len))),
            Outcome::Waiting => {}
            Outcome::Held => {
                // The command stays outstanding; its capsule is no longer needed.
                self.repost(slot);
            }
            Outcome::NoBuffer => self.deferred.push_back((slot, len)),
            Outcome::Fatal => self.fatal("command handling failed"),
        }
    }

    fn repost(&mut self, slot: usize) {
        let off = slot * self.slot_len;
        if let Err(e) = self.qp.post_recv(&[RecvWr::new(KIND_RECV | slot as u64, &[self.recv.sge(off, self.slot_len)])])
        {
            tracing::debug!(qid = self.qid, "cannot re-post a receive: {e}");
            self.closing = true;
        }
    }

    /// Re-posts the command's slot and sends its completion (after its data, if any).
    fn complete(&mut self, slot: usize, cmd: &Command, status: Status, result: u64, data: Option<(usize, usize)>) {
        self.repost(slot);
        self.outstanding = self.outstanding.saturating_sub(1);
        let cqe =
            Completion { result, sqhd: self.sqhd, sqid: self.qid, cid: cmd.cid(), status_field: status.to_field() }
                .to_bytes();
        // NVMe-oF RDMA: a keyed SGL with the invalidate subtype asks for the completion as Send
        // with Invalidate of that key.
        let inval = match cmd.sgl() {
            Ok(Sgl::Keyed { key, invalidate: true, length, .. }) if length > 0 => Some(Stag(key)),
            _ => None,
        };
        let send_id = KIND_SEND | data.map_or(NO_BUF, |(b, _)| b as u64);
        let send = match inval {
            Some(stag) => SendWr::send_with_invalidate(send_id, &[], stag).inline_data(&cqe),
            None => SendWr::send_inline(send_id, &cqe),
        };
        let r = match data {
            Some((b, len)) => {
                let Ok(Sgl::Keyed { addr, key, .. }) = cmd.sgl() else {
                    // (Data is only produced for keyed SGLs.)
                    return self.fatal("data without a keyed SGL");
                };
                let remote = RemoteAddr { stag: Stag(key), to: addr, len: len as u32 };
                let write = SendWr::write(KIND_WRITE | b as u64, &[self.bufs[b].sge(0, len)], remote).unsignaled();
                self.qp.post_send(&[write, send])
            }
            None => self.qp.post_send(&[send]),
        };
        if let Err(e) = r {
            tracing::debug!(qid = self.qid, "cannot post a completion: {e}");
            self.closing = true;
        }
    }

    fn take_buf(&mut self) -> Option<usize> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        if self.bufs.len() >= self.max_bufs {
            return None;
        }
        // Local write only: this stack places Read Responses into a sink with LOCAL_WRITE (a
        // kernel siw sink would need REMOTE_WRITE too), and no peer ever addresses these buffers.
        match self.pd.reg_owned(vec![0u8; self.buf_len], Access::LOCAL_WRITE) {
            Ok(r) => {
                self.bufs.push(r);
                Some(self.bufs.len() - 1)
            }
            Err(e) => {
                tracing::warn!("cannot register a data buffer: {e}");
                None
            }
        }
    }

    /// Starts an RDMA Read of `len` bytes from the command's keyed SGL into data buffer `buf`.
    fn start_read(&mut self, slot: usize, buf: usize, addr: u64, key: u32, len: usize) -> bool {
        let remote = RemoteAddr { stag: Stag(key), to: addr, len: len as u32 };
        let r = self.qp.post_send(&[SendWr::read(KIND_READ | slot as u64, self.bufs[buf].sge(0, len), remote)]);
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(qid = self.qid, "cannot post an RDMA Read: {e}");
                false
            }
        }
    }

    fn execute(&mut self, slot: usize, len: u32, cmd: &Command) -> Outcome {
        let Some(ctrl) = self.ctrl.clone() else {
            // Before Connect only Connect is allowed.
            if cmd.opcode() == admin_opcode::FABRICS && cmd.fctype() == wire::fctype::CONNECT {
                return self.connect_start(slot, len, cmd);
            }
            return Outcome::Done(Status::COMMAND_SEQUENCE_ERROR, 0);
        };
        if cmd.opcode() == admin_opcode::FABRICS {
            return match Fabrics::parse(cmd) {
                Ok(Fabrics::Connect(_)) => Outcome::Done(Status::COMMAND_SEQUENCE_ERROR, 0),
                Ok(Fabrics::PropertyGet { size, offset }) if self.qid == 0 => {
                    match ctrl.property_get(size, offset, self.sub.config.max_queue_entries) {
                        Ok(v) => Outcome::Done(Status::SUCCESS, v),
                        Err(s) => Outcome::Done(s, 0),
                    }
                }
                Ok(Fabrics::PropertySet { size, offset, value }) if self.qid == 0 => {
                    match ctrl.property_set(size, offset, value) {
                        Ok(()) => Outcome::Done(Status::SUCCESS, 0),
                        Err(s) => Outcome::Done(s, 0),
                    }
                }
                Ok(_) => Outcome::Done(Status::INVALID_OPCODE, 0),
                Err(_) => Outcome::Done(Status::INVALID_FIELD, 0),
            };
        }
        if !ctrl.ready() {
            return Outcome::Done(Status::COMMAND_SEQUENCE_ERROR, 0);
        }
        if self.qid == 0 {
            self.admin(&ctrl, cmd)
        } else {
            self.io(slot, len, cmd)
        }
    }

    // ----- Connect -----

    fn connect_start(&mut self, slot: usize, len: u32, cmd: &Command) -> Outcome {
        let Ok(Fabrics::Connect(k)) = Fabrics::parse(cmd) else { return Outcome::Done(Status::INVALID_FIELD, 0) };
        if k.recfmt != wire::RECFMT {
            return Outcome::Done(Status::CONNECT_INCOMPATIBLE_FORMAT, 0);
        }
        let bad_sqe = |offset: u16| {
            Outcome::Done(Status::CONNECT_INVALID_PARAMETERS, wire::connect_invalid_param_result(false, offset))
        };
        if k.qid != self.qid {
            return bad_sqe(42);
        }
        // SQSIZE is 0-based and may not exceed what the connection was accepted for.
        if k.sqsize == 0 || k.sqsize >= self.entries {
            return bad_sqe(44);
        }
        match cmd.sgl() {
            Ok(Sgl::Keyed { addr, length, key, .. }) => {
                if length as usize != CONNECT_DATA_LEN {
                    return Outcome::Done(Status::DATA_SGL_LENGTH_INVALID, 0);
                }
                let Some(buf) = self.take_buf() else { return Outcome::NoBuffer };
                if !self.start_read(slot, buf, addr, key, CONNECT_DATA_LEN) {
                    self.free.push(buf);
                    return Outcome::Fatal;
                }
                self.pending[slot] = Some(Pending::Connect { cmd: *cmd, buf });
                Outcome::Waiting
            }
            Ok(Sgl::InCapsule { offset, length }) => {
                if let Err(s) = self.in_capsule(len, offset, length, CONNECT_DATA_LEN) {
                    return Outcome::Done(s, 0);
                }
                let data = match self.recv.bytes(slot * self.slot_len + SQE_LEN, CONNECT_DATA_LEN) {
                    Ok(b) => ConnectData::parse(&b),
                    Err(_) => return Outcome::Fatal,
                };
                self.connect_finish(cmd, data)
            }
            _ => Outcome::Done(Status::SGL_DESCRIPTOR_TYPE_INVALID, 0),
        }
    }

    /// Checks in-capsule data: offset 0 (ICDOFF is 0), `length` as expected, and present.
    fn in_capsule(&self, received: u32, offset: u64, length: u32, want: usize) -> Result<(), Status> {
        if offset != 0 {
            return Err(Status::SGL_OFFSET_INVALID);
        }
        if length as usize != want || SQE_LEN + want > received as usize || SQE_LEN + want > self.slot_len {
            return Err(Status::DATA_SGL_LENGTH_INVALID);
        }
        Ok(())
    }

    fn connect_finish(&mut self, cmd: &Command, data: Result<ConnectData, wire::WireError>) -> Outcome {
        let bad_data = |offset: u16| {
            Outcome::Done(Status::CONNECT_INVALID_PARAMETERS, wire::connect_invalid_param_result(true, offset))
        };
        let Ok(Fabrics::Connect(k)) = Fabrics::parse(cmd) else { return Outcome::Done(Status::INVALID_FIELD, 0) };
        let Ok(data) = data else { return bad_data(256) };
        if data.subnqn != self.sub.config.nqn {
            tracing::info!(subnqn = %data.subnqn, "Connect to an unknown subsystem");
            return bad_data(256);
        }
        let hosts = &self.sub.config.hosts;
        if !hosts.is_empty() && !hosts.contains(&data.hostnqn) {
            tracing::info!(hostnqn = %data.hostnqn, "Connect from a host not allowed");
            return Outcome::Done(Status::CONNECT_INVALID_HOST, 0);
        }
        if self.qid == 0 {
            if data.cntlid != CNTLID_DYNAMIC {
                return bad_data(16);
            }
            let Some(c) = self.sub.add_controller(data.hostnqn, k.kato) else {
                return Outcome::Done(Status::CONNECT_CONTROLLER_BUSY, 0);
            };
            tracing::info!(cntlid = c.cntlid, hostnqn = %c.hostnqn, kato_ms = k.kato, "controller created");
            let id = c.cntlid;
            self.ctrl = Some(c);
            return Outcome::Done(Status::SUCCESS, u64::from(id));
        }
        let Some(c) = self.sub.controller(data.cntlid) else { return bad_data(16) };
        if c.hostnqn != data.hostnqn {
            return Outcome::Done(Status::CONNECT_INVALID_HOST, 0);
        }
        if !c.ready() {
            return Outcome::Done(Status::COMMAND_SEQUENCE_ERROR, 0);
        }
        let granted = match c.io_queues.load(Ordering::Acquire) {
            0 => self.sub.config.max_io_queues,
            n => n,
        };
        if self.qid > granted || !c.queues.lock().unwrap_or_else(|e| e.into_inner()).insert(self.qid) {
            return Outcome::Done(Status::CONNECT_INVALID_PARAMETERS, wire::connect_invalid_param_result(false, 42));
        }
        let id = c.cntlid;
        self.ctrl = Some(c);
        Outcome::Done(Status::SUCCESS, u64::from(id))
    }

    fn on_read_done(&mut self, slot: usize) {
        let Some(p) = self.pending.get_mut(slot).and_then(Option::take) else {
            return self.fatal("RDMA Read completion without a command");
        };
        let (cmd, outcome, buf) = match p {
            Pending::Connect { cmd, buf } => {
                let data = self.bufs[buf].bytes(0, CONNECT_DATA_LEN).map(|b| ConnectData::parse(&b));
                let Ok(data) = data else { return self.fatal("data buffer") };
                (cmd, self.connect_finish(&cmd, data), buf)
            }
            Pending::Write { cmd, buf, offset, len } => {
                let r = self.bufs[buf].bytes(0, len).map(|b| self.sub.device.write_at(&b, offset));
                let Ok(r) = r else { return self.fatal("data buffer") };
                let status = match r {
                    Ok(()) => Status::SUCCESS,
                    Err(e) => {
                        tracing::warn!("device write failed: {e}");
                        Status::INTERNAL_ERROR
                    }
                };
                (cmd, Outcome::Done(status, 0), buf)
            }
        };
        self.free.push(buf);
        // (Connect and Write conclude without needing another buffer: the length is unused.)
        self.conclude(slot, SQE_LEN as u32, &cmd, outcome);
    }

    // ----- Admin -----

    fn admin(&mut self, ctrl: &Arc<Controller>, cmd: &Command) -> Outcome {
        match cmd.opcode() {
            admin_opcode::IDENTIFY => {
                let page = match cmd.cns() {
                    cns::CONTROLLER => self.sub.identify_controller(ctrl.cntlid),
                    cns::NAMESPACE if cmd.nsid() == NSID => self.sub.identify_namespace(),
                    cns::NAMESPACE => return Outcome::Done(Status::INVALID_NAMESPACE, 0),
                    cns::ACTIVE_NS_LIST if cmd.nsid() < 0xFFFF_FFFE => wire::active_ns_list(&[NSID], cmd.nsid()),
                    cns::ACTIVE_NS_LIST => return Outcome::Done(Status::INVALID_NAMESPACE, 0),
                    cns::NS_DESC_LIST if cmd.nsid() == NSID => wire::ns_desc_list(&self.sub.uuid(), &self.sub.nguid()),
                    cns::NS_DESC_LIST => return Outcome::Done(Status::INVALID_NAMESPACE, 0),
                    _ => return Outcome::Done(Status::INVALID_FIELD, 0),
                };
                self.reply_data(cmd, &page[..], IDENTIFY_LEN)
            }
            admin_opcode::GET_LOG_PAGE => {
                let want = cmd.log_page_len();
                match cmd.lid() {
                    log_page::ERROR | log_page::SMART | log_page::FIRMWARE_SLOT => {}
                    _ => return Outcome::Done(Status::INVALID_LOG_PAGE, 0),
                }
                if want > self.buf_len as u64 {
                    return Outcome::Done(Status::INVALID_FIELD, 0);
                }
                // Nothing to report: no errors logged, health all zero, firmware slot unnamed.
                let zeros = vec![0u8; want as usize];
                self.reply_data(cmd, &zeros, want as usize)
            }
            admin_opcode::SET_FEATURES => match cmd.fid() {
                feature::NUMBER_OF_QUEUES => {
                    let (nsqr, ncqr) = (cmd.cdw(11) & 0xFFFF, cmd.cdw(11) >> 16);
                    if nsqr == 0xFFFF || ncqr == 0xFFFF {
                        return Outcome::Done(Status::INVALID_FIELD, 0);
                    }
                    let max = u32::from(self.sub.config.max_io_queues);
                    let n = (nsqr + 1).min(ncqr + 1).min(max).max(1);
                    ctrl.io_queues.store(n as u16, Ordering::Release);
                    Outcome::Done(Status::SUCCESS, u64::from((n - 1) | ((n - 1) << 16)))
                }
                feature::KEEP_ALIVE_TIMER => {
                    ctrl.set_kato_ms(cmd.cdw(11));
                    Outcome::Done(Status::SUCCESS, 0)
                }
                feature::ASYNC_EVENT_CONFIG => {
                    ctrl.aec.store(cmd.cdw(11), Ordering::Release);
                    Outcome::Done(Status::SUCCESS, 0)
                }
                _ => Outcome::Done(Status::INVALID_FIELD, 0),
            },
            admin_opcode::GET_FEATURES => match cmd.fid() {
                feature::NUMBER_OF_QUEUES => {
                    let n = match ctrl.io_queues.load(Ordering::Acquire) {
                        0 => u32::from(self.sub.config.max_io_queues),
                        n => u32::from(n),
                    };
                    Outcome::Done(Status::SUCCESS, u64::from((n - 1) | ((n - 1) << 16)))
                }
                feature::KEEP_ALIVE_TIMER => Outcome::Done(Status::SUCCESS, u64::from(ctrl.kato_ms())),
                feature::ASYNC_EVENT_CONFIG => {
                    Outcome::Done(Status::SUCCESS, u64::from(ctrl.aec.load(Ordering::Acquire)))
                }
                _ => Outcome::Done(Status::INVALID_FIELD, 0),
            },
            admin_opcode::KEEP_ALIVE => {
                ctrl.keep_alive();
                Outcome::Done(Status::SUCCESS, 0)
            }
            admin_opcode::ASYNC_EVENT_REQUEST => {
                let held = ctrl.aers.load(Ordering::Acquire);
                if held > u16::from(self.sub.config.aerl) {
                    return Outcome::Done(Status::AER_LIMIT_EXCEEDED, 0);
                }
                ctrl.aers.store(held + 1, Ordering::Release);
                Outcome::Held
            }
            _ => Outcome::Done(Status::INVALID_OPCODE, 0),
        }
    }

    /// Sends `data` (which must be exactly the SGL's length) to the command's keyed SGL.
    fn reply_data(&mut self, cmd: &Command, data: &[u8], want: usize) -> Outcome {
        match cmd.sgl() {
            Ok(Sgl::Keyed { length, .. }) => {
                if length as usize != want {
                    return Outcome::Done(Status::DATA_SGL_LENGTH_INVALID, 0);
                }
            }
            _ => return Outcome::Done(Status::SGL_DESCRIPTOR_TYPE_INVALID, 0),
        }
        let Some(buf) = self.take_buf() else { return Outcome::NoBuffer };
        match self.bufs[buf].bytes_mut(0, data.len()) {
            Ok(mut b) => b.copy_from_slice(data),
            Err(_) => return Outcome::Fatal,
        }
        Outcome::DoneWithData(buf, data.len())
    }

    // ----- I/O -----

    /// The byte range of an NVM command's LBA range, or its error status.
    fn lba_range(&self, cmd: &Command) -> Result<(u64, usize), Status> {
        if cmd.nsid() != NSID {
            return Err(Status::INVALID_NAMESPACE);
        }
        let blocks = u64::from(cmd.nlb()) + 1;
        match cmd.slba().checked_add(blocks) {
            Some(end) if end <= self.sub.blocks() => {}
            _ => return Err(Status::LBA_OUT_OF_RANGE),
        }
        let bs = u64::from(self.sub.device.block_size());
        Ok((cmd.slba() * bs, (blocks * bs) as usize))
    }

    fn io(&mut self, slot: usize, received: u32, cmd: &Command) -> Outcome {
        let op = cmd.opcode();
        match op {
            io_opcode::FLUSH => {
                if cmd.nsid() != NSID && cmd.nsid() != 0xFFFF_FFFF {
                    return Outcome::Done(Status::INVALID_NAMESPACE, 0);
                }
                match self.sub.device.flush() {
                    Ok(()) => Outcome::Done(Status::SUCCESS, 0),
                    Err(e) => {
                        tracing::warn!("device flush failed: {e}");
                        Outcome::Done(Status::INTERNAL_ERROR, 0)
                    }
                }
            }
            io_opcode::WRITE_ZEROES => {
                let (off, len) = match self.lba_range(cmd) {
                    Ok(r) => r,
                    Err(s) => return Outcome::Done(s, 0),
                };
                match self.sub.device.write_zeroes(off, len as u64) {
                    Ok(()) => Outcome::Done(Status::SUCCESS, 0),
                    Err(e) => {
                        tracing::warn!("device write zeroes failed: {e}");
                        Outcome::Done(Status::INTERNAL_ERROR, 0)
                    }
                }
            }
            io_opcode::READ | io_opcode::WRITE => {
                let (off, len) = match self.lba_range(cmd) {
                    Ok(r) => r,
                    Err(s) => return Outcome::Done(s, 0),
                };
                if len > self.sub.config.max_transfer() {
                    return Outcome::Done(Status::INVALID_FIELD, 0);
                }
                let sgl = match cmd.sgl() {
                    Ok(s) => s,
                    Err(_) => return Outcome::Done(Status::SGL_DESCRIPTOR_TYPE_INVALID, 0),
                };
                if sgl.length() as usize != len {
                    return Outcome::Done(Status::DATA_SGL_LENGTH_INVALID, 0);
                }
                match (op, sgl) {
                    (io_opcode::READ, Sgl::Keyed { .. }) => {
                        let Some(buf) = self.take_buf() else { return Outcome::NoBuffer };
                        // The one copy: from the device straight into the registered buffer.
                        let r = match self.bufs[buf].bytes_mut(0, len) {
                            Ok(mut b) => self.sub.device.read_at(&mut b, off),
                            Err(_) => return Outcome::Fatal,
                        };
                        match r {
                            Ok(()) => Outcome::DoneWithData(buf, len),
                            Err(e) => {
                                tracing::warn!("device read failed: {e}");
                                self.free.push(buf);
                                Outcome::Done(Status::INTERNAL_ERROR, 0)
                            }
                        }
                    }
                    (io_opcode::WRITE, Sgl::Keyed { addr, key, .. }) => {
                        let Some(buf) = self.take_buf() else { return Outcome::NoBuffer };
                        if !self.start_read(slot, buf, addr, key, len) {
                            self.free.push(buf);
                            return Outcome::Fatal;
                        }
                        self.pending[slot] = Some(Pending::Write { cmd: *cmd, buf, offset: off, len });
                        Outcome::Waiting
                    }
                    (io_opcode::WRITE, Sgl::InCapsule { offset, length }) => {
                        if let Err(s) = self.in_capsule(received, offset, length, len) {
                            return Outcome::Done(s, 0);
                        }
                        // Straight from the receive slot to the device.
                        let r = match self.recv.bytes(slot * self.slot_len + SQE_LEN, len) {
                            Ok(b) => self.sub.device.write_at(&b, off),
                            Err(_) => return Outcome::Fatal,
                        };
                        match r {
                            Ok(()) => Outcome::Done(Status::SUCCESS, 0),
                            Err(e) => {
                                tracing::warn!("device write failed: {e}");
                                Outcome::Done(Status::INTERNAL_ERROR, 0)
                            }
                        }
                    }
                    _ => Outcome::Done(Status::SGL_DESCRIPTOR_TYPE_INVALID, 0),
                }
            }
            _ => Outcome::Done(Status::INVALID_OPCODE, 0),
        }
    }
}
