//! The device: the handle applications open first, and the factory of every other object.

use crate::cq::{CompletionChannel, CompletionQueue};
use crate::error::{ListenError, Result};
use crate::mem::ProtectionDomain;
use crate::setup::passive::{ListenMode, Listener};
use crate::shared::{Capabilities, DeviceConfig, DeviceInner, PostBatching};
use std::net::SocketAddr;
use std::sync::Arc;

/// An iWARP device over the host's TCP stack. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl Device {
    /// Starts a device with its event-loop threads.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for zero workers; [`Error::Io`](crate::Error::Io) if a thread or poller cannot
    /// be created.
    pub fn open(cfg: DeviceConfig) -> Result<Device> {
        Ok(Device { inner: DeviceInner::start(cfg)? })
    }

    /// The device's limits and features.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Sets how this device's [`Progress::Assisted`](crate::Progress::Assisted) queue pairs
    /// join requests posted one at a time in a burst (see [`PostBatching`]); takes effect at
    /// their next post.
    pub fn set_post_batching(&self, b: PostBatching) {
        self.inner.batching.set(b);
    }

    /// How posts are joined ([`set_post_batching`](Self::set_post_batching)).
    pub fn post_batching(&self) -> PostBatching {
        self.inner.batching.get()
    }

    /// A new protection domain.
    pub fn alloc_pd(&self) -> ProtectionDomain {
        ProtectionDomain::new(Arc::clone(&self.inner))
    }

    /// A completion queue sized for `cqe` entries (the size is a hint: it holds every
    /// completion of the queues attached to it).
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if its wake-up descriptor cannot be created.
    pub fn create_cq(&self, cqe: usize) -> Result<CompletionQueue> {
        CompletionQueue::new(&self.inner, cqe, None)
    }

    /// A completion queue that signals `channel` when armed with
    /// [`CompletionQueue::req_notify`].
    ///
    /// # Errors
    /// As [`create_cq`](Self::create_cq).
    pub fn create_cq_with_channel(&self, cqe: usize, channel: &CompletionChannel) -> Result<CompletionQueue> {
        CompletionQueue::new(&self.inner, cqe, Some(channel))
    }

    /// A completion channel: a pollable descriptor for completion notifications.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the descriptor cannot be created.
    pub fn create_comp_channel(&self) -> Result<CompletionChannel> {
        CompletionChannel::new()
    }

    /// Listens for iWARP connections on `addr` (port 0: the host picks one) with a TCP
    /// backlog of `backlog`.
    ///
    /// # Errors
    /// [`ListenError::AddrInUse`] if any socket, iWARP or plain TCP, holds the address.
    pub fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<Listener, ListenError> {
        Listener::bind(&self.inner, addr, backlog, ListenMode::Iwarp)
    }

    /// Listens on `addr` for iWARP **and** plain TCP clients: a connection that starts with
    /// the MPA Request key is an iWARP connection request ([`Listener::get_request`]); any
    /// other, or one silent for `opts.plain_after`, is a [`crate::PlainStream`]
    /// ([`Listener::get_plain`]) that still holds every byte the client sent.
    ///
    /// # Errors
    /// As [`listen`](Self::listen).
    pub fn listen_shared(
        &self,
        addr: SocketAddr,
        backlog: u32,
        opts: crate::SharedOptions,
    ) -> Result<Listener, ListenError> {
        Listener::bind(&self.inner, addr, backlog, ListenMode::Shared(opts))
    }
}
