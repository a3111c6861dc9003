//! Names of completion statuses, asynchronous events and port states, as static C strings
//! (`ibv_wc_status_str`, `ibv_event_type_str`, `ibv_port_state_str`). Out-of-range values
//! get a name that says so; the pointer is never NULL.

use core::ffi::CStr;

/// `enum ibv_wc_status`, in order. The statuses the stack produces use the same words as
/// [`iwarp::WcStatus`]'s `Display`.
const WC_STATUS: [&CStr; 24] = [
    c"success",
    c"local length error",
    c"local QP operation error",
    c"local EE context operation error",
    c"local protection error",
    c"Work Request Flushed Error",
    c"memory window bind error",
    c"bad response error",
    c"local access error",
    c"remote invalid request error",
    c"remote access error",
    c"remote operation error",
    c"transport retry counter exceeded",
    c"RNR retry counter exceeded",
    c"local RDD violation error",
    c"remote invalid RD request",
    c"remote abort error",
    c"invalid EE context number",
    c"invalid EE context state",
    c"fatal error",
    c"response timeout error",
    c"general error",
    c"tag matching error",
    c"tag matching rendezvous incomplete",
];

/// `enum ibv_event_type`, in order.
const EVENT_TYPE: [&CStr; 20] = [
    c"CQ error",
    c"local work queue catastrophic error",
    c"invalid request local work queue error",
    c"local access violation work queue error",
    c"communication established",
    c"send queue drained",
    c"path migrated",
    c"path migration request error",
    c"local catastrophic error",
    c"port active",
    c"port error",
    c"LID change",
    c"P_Key change",
    c"SM change",
    c"SRQ catastrophic error",
    c"SRQ limit reached",
    c"last WQE reached",
    c"client reregistration",
    c"GID table change",
    c"WQ fatal",
];

/// `enum ibv_port_state`, in order.
const PORT_STATE: [&CStr; 6] =
    [c"PORT_NOP", c"PORT_DOWN", c"PORT_INIT", c"PORT_ARMED", c"PORT_ACTIVE", c"PORT_ACTIVE_DEFER"];

/// `enum rdma_cm_event_type`, in order: the enumerators' own names, as rdma-core prints them.
const CM_EVENT: [&CStr; 16] = [
    c"RDMA_CM_EVENT_ADDR_RESOLVED",
    c"RDMA_CM_EVENT_ADDR_ERROR",
    c"RDMA_CM_EVENT_ROUTE_RESOLVED",
    c"RDMA_CM_EVENT_ROUTE_ERROR",
    c"RDMA_CM_EVENT_CONNECT_REQUEST",
    c"RDMA_CM_EVENT_CONNECT_RESPONSE",
    c"RDMA_CM_EVENT_CONNECT_ERROR",
    c"RDMA_CM_EVENT_UNREACHABLE",
    c"RDMA_CM_EVENT_REJECTED",
    c"RDMA_CM_EVENT_ESTABLISHED",
    c"RDMA_CM_EVENT_DISCONNECTED",
    c"RDMA_CM_EVENT_DEVICE_REMOVAL",
    c"RDMA_CM_EVENT_MULTICAST_JOIN",
    c"RDMA_CM_EVENT_MULTICAST_ERROR",
    c"RDMA_CM_EVENT_ADDR_CHANGE",
    c"RDMA_CM_EVENT_TIMEWAIT_EXIT",
];

fn pick(table: &[&'static CStr], v: i64, unknown: &'static CStr) -> &'static CStr {
    usize::try_from(v).ok().and_then(|i| table.get(i).copied()).unwrap_or(unknown)
}

pub(crate) fn wc_status(v: i64) -> &'static CStr {
    pick(&WC_STATUS, v, c"unknown")
}

pub(crate) fn event_type(v: i64) -> &'static CStr {
    pick(&EVENT_TYPE, v, c"unknown")
}

pub(crate) fn cm_event(v: i64) -> &'static CStr {
    pick(&CM_EVENT, v, c"UNKNOWN EVENT")
}

pub(crate) fn port_state(v: i64) -> &'static CStr {
    pick(&PORT_STATE, v, c"invalid state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_the_stack_produces_read_as_its_display() {
        use iwarp::WcStatus as S;
        let pairs = [
            (S::Success, 0),
            (S::LocalLength, 1),
            (S::LocalQpOperation, 2),
            (S::LocalProtection, 4),
            (S::WrFlush, 5),
            (S::RemoteInvalidRequest, 9),
            (S::RemoteAccess, 10),
            (S::RemoteOperation, 11),
            (S::Fatal, 19),
        ];
        for (s, v) in pairs {
            assert_eq!(wc_status(v).to_str().unwrap(), s.to_string(), "status {v}");
        }
    }

    #[test]
    fn out_of_range_values_have_a_name() {
        assert_eq!(wc_status(24), c"unknown");
        assert_eq!(wc_status(-1), c"unknown");
        assert_eq!(event_type(20), c"unknown");
        assert_eq!(port_state(4), c"PORT_ACTIVE");
        assert_eq!(port_state(6), c"invalid state");
    }
}
