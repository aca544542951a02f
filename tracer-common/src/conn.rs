//! TCP connection records (`conn_*` tracepoints) and the tracefs field
//! offsets the programs read them with.

use crate::EventHeader;

/// Which tracepoint a [`ConnEvent`] came from.
pub mod conn_kind {
    /// `sock:inet_sock_set_state` (old → new).
    pub const STATE: u8 = 1;
    /// `tcp:tcp_receive_reset`.
    pub const RESET_RECEIVED: u8 = 2;
    /// `tcp:tcp_send_reset`.
    pub const RESET_SENT: u8 = 3;
    /// `tcp:tcp_retransmit_skb`.
    pub const RETRANSMIT: u8 = 4;
}

/// A TCP socket event.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnEvent {
    /// Header; `kind` is [`crate::EventKind::Conn`].
    pub hdr: EventHeader,
    /// Kernel address of the socket: identity across events.
    pub sock: u64,
    /// Netns inode of the current task (process context only).
    pub netns_ino: u32,
    /// One of [`conn_kind`].
    pub what: u8,
    /// Old state (STATE) or current state (others).
    pub old_state: u8,
    /// New state (STATE).
    pub new_state: u8,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u8,
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    /// Explicit padding.
    pub pad: u32,
    /// Local address (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes).
    pub daddr: [u8; 16],
}

const _: () = assert!(size_of::<ConnEvent>() == 64 + 8 + 8 + 8 + 32);

/// Offsets of one tracepoint's fields in its raw record (from
/// `/sys/kernel/tracing/events/<cat>/<name>/format`), `u16::MAX` = absent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TpFields {
    /// `skaddr`.
    pub skaddr: u16,
    /// `sport`.
    pub sport: u16,
    /// `dport`.
    pub dport: u16,
    /// `family`.
    pub family: u16,
    /// `saddr` (4 bytes).
    pub saddr: u16,
    /// `daddr` (4 bytes).
    pub daddr: u16,
    /// `saddr_v6` (16 bytes).
    pub saddr_v6: u16,
    /// `daddr_v6` (16 bytes).
    pub daddr_v6: u16,
    /// `oldstate` (int).
    pub oldstate: u16,
    /// `newstate` (int).
    pub newstate: u16,
    /// `state` (int).
    pub state: u16,
    /// `protocol` (u16).
    pub protocol: u16,
}

impl TpFields {
    /// Every field absent.
    pub const NONE: Self = Self {
        skaddr: u16::MAX,
        sport: u16::MAX,
        dport: u16::MAX,
        family: u16::MAX,
        saddr: u16::MAX,
        daddr: u16::MAX,
        saddr_v6: u16::MAX,
        daddr_v6: u16::MAX,
        oldstate: u16::MAX,
        newstate: u16::MAX,
        state: u16::MAX,
        protocol: u16::MAX,
    };
}

impl Default for TpFields {
    fn default() -> Self {
        Self::NONE
    }
}
