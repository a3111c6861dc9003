//! The queue pair state machine: every transition in one table.

/// Queue pair states (after RFC 5040 §6 and Linux siw's QP states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QpState {
    /// Created, not yet connected.
    Idle,
    /// Ready to send and receive.
    Rts,
    /// Graceful disconnect: no new work; framed bytes drain, then the stream closes.
    Closing,
    /// A protocol error was found: the Terminate is going out; nothing else will.
    Terminate,
    /// Finished: every outstanding work request has been flushed.
    Error,
}

impl core::fmt::Display for QpState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            QpState::Idle => "idle",
            QpState::Rts => "ready to send",
            QpState::Closing => "closing",
            QpState::Terminate => "terminating",
            QpState::Error => "error",
        })
    }
}

/// What happens to a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpEventKind {
    /// MPA negotiation finished.
    Connected,
    /// The application disconnects.
    Disconnect,
    /// Everything framed before a disconnect or Terminate has been handed to TCP.
    Drained,
    /// This side found a protocol violation by the peer (or a local fault) and terminates.
    ProtocolError,
    /// The peer's Terminate arrived.
    TerminateReceived,
    /// The peer closed the stream (end of file between FPDUs).
    PeerClosed,
    /// The connection failed (reset, I/O error, end of file inside an FPDU).
    TransportError,
}

/// A transition the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal queue pair transition: {event:?} in state {from:?}")]
pub struct IllegalTransition {
    /// The state.
    pub from: QpState,
    /// The event.
    pub event: QpEventKind,
}

macro_rules! transitions {
    ($( $event:ident ( $( $from:ident )|+ => $to:ident ) ),+ $(,)?) => {
        /// The transition table, in the order it is written.
        pub const TRANSITIONS: &[(QpEventKind, QpState, QpState)] = &[
            $( $( (QpEventKind::$event, QpState::$from, QpState::$to), )+ )+
        ];
    };
}

transitions! {
    Connected(Idle => Rts),
    Disconnect(Idle => Error),
    Disconnect(Rts => Closing),
    Drained(Closing => Error),
    Drained(Terminate => Error),
    ProtocolError(Rts | Closing => Terminate),
    TerminateReceived(Rts | Closing => Error),
    PeerClosed(Rts | Closing => Error),
    TransportError(Idle | Rts | Closing | Terminate => Error),
}

impl QpState {
    /// The state `event` leads to from `self`.
    ///
    /// # Errors
    /// [`IllegalTransition`] if the table has no such transition.
    pub fn on(self, event: QpEventKind) -> Result<QpState, IllegalTransition> {
        TRANSITIONS
            .iter()
            .find(|(e, from, _)| *e == event && *from == self)
            .map(|&(_, _, to)| to)
            .ok_or(IllegalTransition { from: self, event })
    }

    /// The transition table as a Graphviz dot graph.
    pub fn dot() -> String {
        let mut s = String::from("digraph qp {\n");
        for (e, from, to) in TRANSITIONS {
            s.push_str(&format!("    {from:?} -> {to:?} [label=\"{e:?}\"];\n"));
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // insta runs `cargo metadata` to find its files, which Miri cannot; the table is no memory
    // matter.
    #[cfg_attr(miri, ignore)]
    fn transition_table_snapshot() {
        insta::assert_snapshot!(QpState::dot());
    }

    #[test]
    fn illegal_events_are_errors() {
        assert_eq!(QpState::Idle.on(QpEventKind::Connected), Ok(QpState::Rts));
        assert_eq!(
            QpState::Error.on(QpEventKind::Connected),
            Err(IllegalTransition { from: QpState::Error, event: QpEventKind::Connected })
        );
        assert!(QpState::Error.on(QpEventKind::TransportError).is_err());
        assert!(QpState::Terminate.on(QpEventKind::ProtocolError).is_err());
        // Every state but Error can reach Error.
        for s in [QpState::Idle, QpState::Rts, QpState::Closing, QpState::Terminate] {
            assert_eq!(s.on(QpEventKind::TransportError), Ok(QpState::Error));
        }
    }
}
