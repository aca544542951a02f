//! DNS transactions: one query and its outcome, the unit pairing produces
//! and every DNS detector and sink consumes.

use std::sync::Arc;

use serde::Serialize;

use super::PodRef;
use crate::event::{Endpoint, Process, Transport};

/// One answer record, rendered for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Owner name, no trailing dot (shared: usually the query's name).
    pub name: Arc<str>,
    /// Type, shown as its mnemonic (`A`, `AAAA`, `CNAME`, or `TYPE123`).
    pub rtype: super::RType,
    /// TTL in seconds.
    pub ttl: u32,
    /// Presentation form of the data (`10.0.0.1`, `target.example`), best
    /// effort (shared: the same addresses come back in answer after answer).
    pub data: Arc<str>,
}

/// Where a transaction was observed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// Only the client's side (query left the client socket / answer reached it).
    Client,
    /// Only the server's side (query reached the server socket / answer left it).
    Server,
    /// Both sides were seen: on this node (client and server both local), or
    /// joined across nodes' captures or agents (the resolver's view of a query
    /// the client sent to a Service address).
    Both,
    /// A foreign capture: wire packets, direction inferred from ports.
    Wire,
}

/// One DNS query and its outcome, as the client experienced it where possible.
#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    /// Monotonic ns when the (first) query was seen.
    pub ts_ns: u64,
    /// Monotonic ns when the answer was seen, if any.
    pub end_ns: Option<u64>,
    /// Node that observed it.
    pub node: Option<Arc<str>>,
    /// Client network namespace inode (0 if unknown).
    pub netns: u32,
    /// Client cgroup id (0 if unknown).
    pub cgroup_id: u64,
    /// Client process (thread-group leader).
    pub process: Option<Process>,
    /// Server process, when the server side was observed on this node.
    pub server_process: Option<Process>,
    /// Client socket.
    pub client: Endpoint,
    /// Server socket.
    pub server: Endpoint,
    /// Client pod.
    pub client_pod: Option<PodRef>,
    /// Server pod.
    pub server_pod: Option<PodRef>,
    /// The address the resolver received the query on, when its side was
    /// observed: differs from `server` when the client asked a Service
    /// `ClusterIP` that kube-proxy (or an eBPF datapath) rewrote (DNAT).
    pub resolver: Option<Endpoint>,
    /// The client address as the resolver saw it (differs from `client` when
    /// the path source-NATs, e.g. masquerading cross-node traffic).
    pub resolver_client: Option<Endpoint>,
    /// The pod at `resolver` (the resolver pod that answered).
    pub resolver_pod: Option<PodRef>,
    /// UDP or TCP.
    pub transport: Transport,
    /// Message id.
    pub id: u16,
    /// Queried name, no trailing dot (shared with the messages that carried it).
    pub qname: Arc<str>,
    /// Queried type.
    pub qtype: u16,
    /// Response code (None when unanswered).
    pub rcode: Option<u16>,
    /// Answer records.
    pub answers: Vec<Answer>,
    /// Query-to-answer time at the observation point closest to the client.
    pub latency_ns: Option<u64>,
    /// No answer within the timeout (or before the end of the capture).
    pub timed_out: bool,
    /// Extra copies of the query with the same id (client retransmits).
    pub retransmits: u32,
    /// Extra answers to the same query (duplicates).
    pub duplicate_answers: u32,
    /// Which side(s) were observed.
    pub observed: Observed,
}
