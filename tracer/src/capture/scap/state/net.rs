//! Socket I/O: DNS messages as synthesised packets, connection failures,
//! and the join of a resolver's and its clients' views of one message.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use bytes::Bytes;
use serde_json::json;

use super::{DNS_PORT, Decoder, EINPROGRESS, Fd, MAX_STREAMS};
use crate::{
    capture::{
        Item, MetaBlock,
        scap::{
            blocks::L4,
            events::{Params, ev},
            synth::{self, TCP_PSH_ACK, TCP_SYN},
        },
    },
    event::{ConnKind, ConnRecord, Endpoint, Hook, PacketRecord, Process, Record, tcp_state},
    hash::FastMap,
};

pub(super) fn tuple(b: Option<&[u8]>) -> Option<Tuple> {
    let b = b?;
    let (&fam, rest) = b.split_first()?;
    match fam {
        2 if rest.len() >= 12 => Some(Tuple {
            src: Endpoint { ip: v4(rest.get(0..4)?)?, port: port(rest, 4)? },
            dst: Endpoint { ip: v4(rest.get(6..10)?)?, port: port(rest, 10)? },
        }),
        10 if rest.len() >= 36 => Some(Tuple {
            src: Endpoint { ip: v6(rest.get(0..16)?)?, port: port(rest, 16)? },
            dst: Endpoint { ip: v6(rest.get(18..34)?)?, port: port(rest, 34)? },
        }),
        _ => None,
    }
}

pub(super) fn sockaddr(b: Option<&[u8]>) -> Option<Endpoint> {
    let b = b?;
    let (&fam, rest) = b.split_first()?;
    match fam {
        2 => Some(Endpoint { ip: v4(rest.get(0..4)?)?, port: port(rest, 4)? }),
        10 => Some(Endpoint { ip: v6(rest.get(0..16)?)?, port: port(rest, 16)? }),
        _ => None,
    }
}

pub(super) fn v4(b: &[u8]) -> Option<IpAddr> {
    let a: [u8; 4] = b.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(a)))
}

pub(super) fn v6(b: &[u8]) -> Option<IpAddr> {
    let a: [u8; 16] = b.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(a)))
}

/// Ports in scap parameters are in host (little-endian) order.
pub(super) fn port(b: &[u8], at: usize) -> Option<u16> {
    crate::capture::scap::events::le16(b, at)
}

pub(super) fn unspecified(e: &Endpoint) -> bool {
    e.ip.is_unspecified() && e.port == 0
}

pub(super) fn fail_kind(errno: i64) -> Option<&'static str> {
    match errno {
        111 => Some("refused"),
        110 => Some("timeout"),
        101 | 113 => Some("unreachable"),
        _ => None,
    }
}

pub(super) fn syscall_name(etype: u16) -> &'static str {
    #[allow(clippy::wildcard_imports, reason = "the event table's names")]
    use ev::*;
    match etype {
        WRITE_X => "write",
        SEND_X => "send",
        WRITEV_X => "writev",
        SENDTO_X => "sendto",
        SENDMSG_X => "sendmsg",
        SENDMMSG_X => "sendmmsg",
        READ_X => "read",
        RECV_X => "recv",
        READV_X => "readv",
        RECVFROM_X => "recvfrom",
        RECVMSG_X => "recvmsg",
        RECVMMSG_X => "recvmmsg",
        _ => "?",
    }
}

/// A source and destination endpoint, in the direction the data flows.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tuple {
    pub(super) src: Endpoint,
    pub(super) dst: Endpoint,
}

/// Client sockets tracked at once.
const MAX_CLIENTS: usize = 1 << 16;
/// Processes whose data-less sends are remembered.
const MAX_SENDERS: usize = 1 << 14;
/// Data-less sends remembered per process.
const MAX_SENDS_PER_PROCESS: usize = 16;

/// An IPv4-mapped address as IPv4: a dual-stack socket's view of a v4 peer
/// and the peer's own view then compare equal.
fn canon(e: Endpoint) -> Endpoint {
    match e.ip {
        IpAddr::V6(v) => Endpoint { ip: v.to_ipv4_mapped().map_or(e.ip, IpAddr::V4), port: e.port },
        IpAddr::V4(_) => e,
    }
}

/// A client socket seen talking to a DNS server: where its queries went, as
/// the client addressed them (before any DNAT).
#[derive(Debug)]
struct ClientSock {
    server: Endpoint,
    pid: u64,
    /// When it was connected (or first sent): sends before are not its.
    since: u64,
    /// Its last send that the capture shows with data.
    visible_send: Option<u64>,
    /// Closed: still names what its address asked (a resolver's late answer
    /// to it) until the address is reused, but sends no more.
    closed: bool,
}

/// What the capture says about DNS clients, for joining a resolver's view
/// of a message with the client's.
///
/// A resolver on a wildcard (or dual-stack) socket sees its own address as
/// `0.0.0.0:53`/`:::53`, and behind a DNAT (a node address or a Service IP
/// rewritten to the resolver) neither that nor the address its fd shows is
/// the one the client asked. The client's socket, keyed by its own address
/// (what the resolver sees as the peer), tells the address it used; the
/// resolver's side of the exchange is presented with that address so both
/// views pair into one transaction.
///
/// Old drivers record glibc's `sendmmsg` (A and AAAA at once) without
/// parameters: the client's query is then only in the resolver's view, and
/// the send's time and thread say when and who sent it.
#[derive(Debug, Default)]
pub(super) struct Clients {
    by_addr: FastMap<Endpoint, ClientSock>,
    /// Data-less sends per process: (time, thread, messages recovered from
    /// it so far), oldest first.
    invisible: FastMap<u64, VecDeque<(u64, u64, u64)>>,
}

impl Clients {
    fn learn(&mut self, ts: u64, pid: u64, own: Endpoint, server: Endpoint, visible: bool) -> bool {
        let own = canon(own);
        if own.port == 0 || own.ip.is_unspecified() || server.port != DNS_PORT || own.port == DNS_PORT {
            return true;
        }
        if let Some(c) = self.by_addr.get_mut(&own)
            && c.pid == pid
            && c.server == server
            && !c.closed
        {
            if visible {
                c.visible_send = Some(ts);
            }
            return true;
        }
        if self.by_addr.len() >= MAX_CLIENTS && !self.by_addr.contains_key(&own) {
            self.by_addr.retain(|_, c| !c.closed);
            if self.by_addr.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let visible_send = visible.then_some(ts);
        self.by_addr.insert(own, ClientSock { server, pid, since: ts, visible_send, closed: false });
        true
    }

    /// The socket `pid` had at `own` is closed.
    pub(super) fn closed(&mut self, pid: u64, own: Endpoint) {
        if let Some(c) = self.by_addr.get_mut(&canon(own))
            && c.pid == pid
        {
            c.closed = true;
        }
    }
}

impl Decoder {
    /// A send the capture has no data for (old drivers' `sendmmsg`).
    pub(super) fn invisible_send(&mut self, ts: u64, tid: u64) {
        self.stats.sends_without_data += 1;
        let pid = self.pid_of(tid);
        let c = &mut self.clients;
        if c.invisible.len() >= MAX_SENDERS && !c.invisible.contains_key(&pid) {
            c.invisible.clear();
            self.stats.table_full += 1;
        }
        let sends = c.invisible.entry(pid).or_default();
        if sends.len() >= MAX_SENDS_PER_PROCESS {
            sends.pop_front();
        }
        sends.push_back((ts, tid, 0));
    }

    fn learn_client(&mut self, ts: u64, pid: u64, own: Endpoint, server: Endpoint, visible: bool) {
        if !self.clients.learn(ts, pid, own, server, visible) {
            self.stats.table_full += 1;
        }
    }

    /// The resolver's side of an exchange with a client socket this capture
    /// saw: its own address becomes the one the client used. On a query
    /// received (`!egress`) whose send the client's events do not show, the
    /// client's send is synthesised first, at the time and with the thread
    /// of its data-less send. Returns the resolver's own address to use.
    #[expect(clippy::too_many_arguments, reason = "the message and both of its ends")]
    fn join_client(
        &mut self,
        ts: u64,
        pid: u64,
        egress: bool,
        own: Endpoint,
        peer: Endpoint,
        data: &[u8],
        full: usize,
    ) -> Endpoint {
        let Some(c) = self.clients.by_addr.get(&canon(peer)) else { return own };
        if c.pid == pid {
            return own;
        }
        let (server, cpid, since, visible, closed) = (c.server, c.pid, c.since, c.visible_send, c.closed);
        // QR bit clear: a query.
        let query = data.get(2).is_some_and(|b| b & 0x80 == 0);
        if !egress && query && !closed {
            let send = self.clients.invisible.get_mut(&cpid).and_then(|s| {
                s.iter_mut().rev().find(|(t, _, _)| *t <= ts && *t >= since && visible.is_none_or(|v| *t > v))
            });
            if let Some((sts, stid, n)) = send {
                // One syscall sent them all; a nanosecond apiece keeps them in
                // the order the resolver received them (A before AAAA).
                let (sts, stid) = (*sts + *n, *stid);
                *n += 1;
                self.stats.dns_inferred += 1;
                self.emit_packet(sts, stid, true, canon(peer), server, None, data, full);
            }
        }
        server
    }

    pub(super) fn connect_exit(&mut self, ts: u64, tid: u64, etype: u16, p: &Params<'_>) {
        let pend = self.take_pending(tid, etype);
        let fd = p.int(2).or(pend.as_ref().and_then(|x| x.fd));
        let addr = sockaddr(p.get(3)).or(pend.as_ref().and_then(|x| x.addr));
        let Some(res) = p.int(0) else { return };
        let t = tuple(p.get(1));
        let pid = self.pid_of(tid);
        if res == 0 || res == -EINPROGRESS {
            if let (Some(fd), Some(t)) = (fd, t) {
                self.update_sock(pid, fd, Some(t.src), Some(t.dst));
                self.learn_ip(tid, t.src.ip);
                if self.fd_get(pid, fd).is_some_and(|f| matches!(f, Fd::Sock { l4: L4::Udp | L4::Other, .. })) {
                    self.learn_client(ts, pid, t.src, canon(t.dst), false);
                }
            }
            return;
        }
        let l4 = fd.and_then(|f| match self.fd_get(pid, f) {
            Some(Fd::Sock { l4, .. }) => Some(*l4),
            _ => None,
        });
        let src = t.map(|t| t.src).filter(|e| !unspecified(e));
        let dst = t.map(|t| t.dst).filter(|e| !unspecified(e)).or(addr);
        if l4 == Some(L4::Tcp) && fail_kind(-res) == Some("refused") {
            let start = pend.as_ref().map_or(ts, |x| x.ts);
            self.tcp_refused(start, ts, tid, src, dst);
            return;
        }
        self.conn_fail(ts, tid, "connect", l4, src, dst, -res);
    }

    /// Remembers an address a thread's container was seen using on its own
    /// end of a socket (not the wildcard, not loopback).
    pub(super) fn learn_ip(&mut self, tid: u64, ip: IpAddr) {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        if ip.is_unspecified() || ip.is_loopback() {
            return;
        }
        let Some(c) = self.threads.get(&tid).and_then(|t| t.container.clone()) else { return };
        if let Some(c) = self.containers.get_mut(&c)
            && c.seen_ip.is_none()
        {
            // The first one only: the snapshot (pod IPs) should not churn.
            c.seen_ip = Some(ip);
            if c.pod.is_some() && c.ip.is_none_or(|x| x.is_unspecified()) {
                self.pods_dirty = true;
            }
        }
    }

    /// A socket's own address: a wildcard-bound socket's syscalls report
    /// `0.0.0.0`/`::` where the packet carried the pod's address (dnsmasq's
    /// forwards). The container's address (metadata, else seen on its other
    /// sockets) of the peer's family stands in for it.
    pub(super) fn own_ip(&self, tid: u64, own: IpAddr, peer: IpAddr) -> IpAddr {
        if !own.is_unspecified() {
            return own;
        }
        let Some(c) = self.threads.get(&tid).and_then(|t| t.container.as_ref()).and_then(|c| self.containers.get(c))
        else {
            return own;
        };
        let peer_v4 = match peer {
            IpAddr::V4(_) => true,
            IpAddr::V6(v) => v.to_ipv4_mapped().is_some(),
        };
        [c.ip, c.seen_ip]
            .into_iter()
            .flatten()
            .find(|ip| !ip.is_unspecified() && ip.is_ipv4() == peer_v4 && !peer.is_loopback())
            .unwrap_or(own)
    }

    /// A TCP connect refused (an RST answered the SYN) as the kernel's
    /// tracepoints report it live: `CLOSE → SYN_SENT` when `connect()` started
    /// (in the process), the RST received in `SYN_SENT`, then `SYN_SENT →
    /// CLOSE`, so `ktrace drops` counts it like a live one.
    pub(super) fn tcp_refused(&mut self, start: u64, ts: u64, tid: u64, src: Option<Endpoint>, dst: Option<Endpoint>) {
        use tcp_state::{CLOSE, SYN_SENT};
        let Some(dst) = dst else {
            // Nothing to report it against.
            self.stats.io_unknown_endpoints += 1;
            return;
        };
        let (pid, comm, thread, _) = self.who(tid);
        let unspec =
            if dst.ip.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
        let src = src.unwrap_or(Endpoint { ip: unspec, port: 0 });
        let src = Endpoint { ip: self.own_ip(tid, src.ip, dst.ip), port: src.port };
        let process = Process { pid: pid as u32, tid: tid as u32, comm, thread };
        self.sock_seq = self.sock_seq.wrapping_add(1);
        // Opaque, never a kernel address (those have the top bits set).
        let sock = self.sock_seq | (1 << 62);
        let rec = |ts_ns, kind, process| ConnRecord {
            ts_ns,
            kind,
            src,
            dst,
            sock,
            process,
            netns_ino: 0,
            node: self.node.clone(),
        };
        let recs = [
            rec(start.min(ts), ConnKind::State { old: CLOSE, new: SYN_SENT }, Some(process.clone())),
            rec(ts, ConnKind::ResetReceived { state: SYN_SENT }, None),
            rec(ts, ConnKind::State { old: SYN_SENT, new: CLOSE }, Some(process)),
        ];
        self.stats.conn_failures += 1;
        for r in recs {
            self.push_record(Record::Conn(r));
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one call per event kind, positions differ")]
    pub(super) fn conn_fail(
        &mut self,
        ts: u64,
        tid: u64,
        syscall: &str,
        l4: Option<L4>,
        src: Option<Endpoint>,
        dst: Option<Endpoint>,
        errno: i64,
    ) {
        let Some(kind) = fail_kind(errno) else { return };
        let (pid, comm, thread, _) = self.who(tid);
        let transport = match l4 {
            Some(L4::Tcp) => Some("tcp"),
            Some(L4::Udp) => Some("udp"),
            _ => None,
        };
        let data = json!({
            "ts_ns": ts,
            "pid": pid,
            "tid": tid,
            "comm": &*comm,
            "thread": &*thread,
            "syscall": syscall,
            "transport": transport,
            "src": src.map(|e| e.to_string()),
            "dst": dst.map(|e| e.to_string()),
            "errno": errno,
            "kind": kind,
            "node": self.node.as_deref(),
        });
        self.stats.conn_failures += 1;
        self.out.push_back(Item::Meta(MetaBlock::Custom {
            name: "conn_fail/v1".into(),
            data: data.to_string().into_bytes(),
        }));
    }

    /// A read/write-family exit: DNS on port 53 becomes a packet, resolv.conf
    /// reads become evidence, failures on sockets become `conn_fail`.
    #[expect(clippy::too_many_arguments, reason = "one call per event kind, positions differ")]
    pub(super) fn io(
        &mut self,
        ts: u64,
        tid: u64,
        etype: u16,
        egress: bool,
        res: Option<i64>,
        data: Option<&[u8]>,
        x_fd: Option<i64>,
        x_tuple: Option<Tuple>,
    ) {
        let pend = self.take_pending(tid, etype);
        let fd = x_fd.or(pend.as_ref().and_then(|x| x.fd));
        let tuple = x_tuple.or(pend.as_ref().and_then(|x| x.tuple));
        let Some(res) = res else { return };
        let pid = self.pid_of(tid);
        let entry = fd.and_then(|f| self.fd_get(pid, f));
        if let (Some(Fd::File { resolv: Some(_), .. }), Some(fd)) = (entry, fd) {
            if !egress {
                self.resolv_read(ts, pid, fd, res, data.unwrap_or_default());
            }
            return;
        }
        let (l4, local, remote) = match entry {
            Some(Fd::Sock { l4, local, remote }) => (Some(*l4), *local, *remote),
            Some(_) => {
                self.stats.io_other += 1;
                return;
            }
            None => (None, None, None),
        };
        if res < 0 {
            if l4.is_some() || tuple.is_some() {
                let (src, dst) = match tuple {
                    Some(t) if egress => (Some(t.src), Some(t.dst)),
                    Some(t) => (Some(t.dst), Some(t.src)),
                    None => (local, remote),
                };
                let name = syscall_name(etype);
                if l4 == Some(L4::Tcp) && fail_kind(-res) == Some("refused") {
                    self.tcp_refused(ts, ts, tid, src.filter(|e| !unspecified(e)), dst.filter(|e| !unspecified(e)));
                    return;
                }
                self.conn_fail(
                    ts,
                    tid,
                    name,
                    l4,
                    src.filter(|e| !unspecified(e)),
                    dst.filter(|e| !unspecified(e)),
                    -res,
                );
            }
            return;
        }
        if res == 0 {
            return;
        }
        // The data flows src → dst; the socket's own end is src on egress.
        let (src, dst) = match tuple {
            Some(t) => {
                let (mut s, mut d) = (t.src, t.dst);
                // An unbound socket's first sendto shows port 0: the fd may know better.
                let own = if egress { &mut s } else { &mut d };
                if own.port == 0
                    && let Some(l) = local
                {
                    *own = l;
                }
                (s, d)
            }
            None => match (local, remote) {
                (Some(l), Some(r)) if egress => (l, r),
                (Some(l), Some(r)) => (r, l),
                _ => {
                    self.stats.io_unknown_endpoints += 1;
                    return;
                }
            },
        };
        if let (Some(fd), Some(t)) = (fd, tuple) {
            // Learn the socket's own address (ephemeral port) from what the kernel reported.
            let own = if egress { t.src } else { t.dst };
            if own.port != 0 {
                self.update_sock(pid, fd, Some(own), None);
            }
        }
        let (src, dst) = {
            let (own, peer) = if egress { (src, dst) } else { (dst, src) };
            self.learn_ip(tid, own.ip);
            let own = Endpoint { ip: self.own_ip(tid, own.ip, peer.ip), port: own.port };
            if egress { (own, peer) } else { (peer, own) }
        };
        let full = usize::try_from(res).unwrap_or(usize::MAX);
        let data = data.unwrap_or_default();
        let (src, dst) = if l4 == Some(L4::Tcp) {
            (src, dst)
        } else if egress {
            if dst.port == DNS_PORT {
                self.learn_client(ts, pid, src, canon(dst), true);
            }
            (self.join_client(ts, pid, true, src, dst, data, full), dst)
        } else {
            (src, self.join_client(ts, pid, false, dst, src, data, full))
        };
        if src.port != DNS_PORT && dst.port != DNS_PORT {
            self.stats.io_non_dns += 1;
            return;
        }
        let tcp = match l4 {
            Some(L4::Tcp) => {
                let key = (egress, src, dst);
                let seq = if let Some(&s) = self.tcp_seq.get(&key) {
                    s
                } else {
                    if self.tcp_seq.len() >= MAX_STREAMS {
                        self.tcp_seq.clear();
                        self.stats.table_full += 1;
                    }
                    // A stream's first bytes: a SYN first, so the decoder starts in sync.
                    self.emit_packet(ts, tid, egress, src, dst, Some((0, TCP_SYN)), &[], 0);
                    1
                };
                self.tcp_seq.insert(key, seq.wrapping_add(full as u32));
                Some((seq, TCP_PSH_ACK))
            }
            _ => None,
        };
        self.emit_packet(ts, tid, egress, src, dst, tcp, data, full);
    }

    #[expect(clippy::too_many_arguments, reason = "a packet's every field")]
    pub(super) fn emit_packet(
        &mut self,
        ts: u64,
        tid: u64,
        egress: bool,
        src: Endpoint,
        dst: Endpoint,
        tcp: Option<(u32, u8)>,
        data: &[u8],
        full: usize,
    ) {
        self.ip_id = self.ip_id.wrapping_add(1);
        let Some((bytes, wire_len)) = synth::packet(src, dst, tcp, data, full, self.ip_id) else {
            self.stats.io_too_large += 1;
            return;
        };
        let (pid, comm, thread, container) = self.who(tid);
        let cgroup_id = self.cgroup_id(container.as_ref());
        let process = egress.then_some(Process { pid: pid as u32, tid: tid as u32, comm, thread });
        let rec = PacketRecord {
            ts_ns: ts,
            hook: if egress { Hook::SocketEgress } else { Hook::SocketIngress },
            process,
            cgroup_id,
            netns_cookie: 0,
            netns_ino: 0,
            ifindex: 0,
            wire_len,
            data: Bytes::from(bytes),
            node: self.node.clone(),
        };
        if !data.is_empty() {
            self.stats.dns_messages += 1;
        }
        self.push_record(Record::Packet(rec));
    }
}
