//! DNS message decoding.
// OWNER: decode helper. Contract below is fixed; fill in the implementation.

use serde::Serialize;
use thiserror::Error;

/// Why a payload is not a DNS message we can use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnsError {
    /// Shorter than the 12-byte header or than a record claims.
    #[error("DNS message truncated at byte {0}")]
    Truncated(usize),
    /// No question (we need qname/qtype to pair and explain).
    #[error("DNS message has no question")]
    NoQuestion,
    /// A compression pointer loop or a name longer than 255 bytes.
    #[error("bad DNS name at byte {0}")]
    BadName(usize),
}

/// One answer record, rendered for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Owner name, no trailing dot.
    pub name: String,
    /// Type mnemonic (`A`, `AAAA`, `CNAME`, or `TYPE123`).
    pub rtype: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Presentation form of the data (`10.0.0.1`, `target.example`), best effort.
    pub data: String,
}

/// A decoded DNS message: what pairing and findings need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// Message id.
    pub id: u16,
    /// QR bit: true for a response.
    pub is_response: bool,
    /// Opcode (0 = QUERY).
    pub opcode: u8,
    /// Response code including the EDNS extended bits (e.g. 23 = BADCOOKIE).
    pub rcode: u16,
    /// TC bit.
    pub truncated: bool,
    /// RD bit.
    pub recursion_desired: bool,
    /// First question's name, no trailing dot, as sent (case kept).
    pub qname: String,
    /// First question's type.
    pub qtype: u16,
    /// Answer records (answer section only), at most a bounded number.
    pub answers: Vec<Answer>,
    /// ANCOUNT from the header.
    pub ancount: u16,
}

/// Decodes a DNS message (without TCP length prefix).
pub fn decode(payload: &[u8]) -> Result<DnsMessage, DnsError> {
    let _ = payload;
    Err(DnsError::Truncated(0))
}

/// IANA mnemonic of a query/record type (`A`, `AAAA`, …, `TYPE65280`).
#[must_use]
pub fn qtype_name(t: u16) -> String {
    format!("TYPE{t}")
}

/// IANA mnemonic of an rcode (`NOERROR`, `NXDOMAIN`, …, `RCODE30`).
#[must_use]
pub fn rcode_name(r: u16) -> String {
    format!("RCODE{r}")
}
