//! `ktrace agent`: the node daemon (gRPC stream of records, Prometheus metrics, health).

pub mod client;
pub mod daemon;
pub mod encode;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod reader;
pub mod server;
pub mod stream;

/// The gRPC API generated from `proto/ktrace/agent/v1/agent.proto`.
#[allow(clippy::pedantic, unreachable_pub, missing_docs)]
pub mod proto {
    tonic::include_proto!("ktrace.agent.v1");
}
