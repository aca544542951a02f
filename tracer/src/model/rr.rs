//! Mnemonics of DNS record types and response codes, and [`RType`]: a record
//! type kept as its number and shown by name (no string per answer).

use serde::{Serialize, Serializer};

/// IANA mnemonic of a type, without allocating; None for unassigned ones.
#[must_use]
pub fn qtype_str(t: u16) -> Option<&'static str> {
    Some(match t {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        19 => "X25",
        20 => "ISDN",
        21 => "RT",
        22 => "NSAP",
        23 => "NSAP-PTR",
        24 => "SIG",
        25 => "KEY",
        26 => "PX",
        27 => "GPOS",
        28 => "AAAA",
        29 => "LOC",
        30 => "NXT",
        31 => "EID",
        32 => "NIMLOC",
        33 => "SRV",
        34 => "ATMA",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        38 => "A6",
        39 => "DNAME",
        40 => "SINK",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        56 => "NINFO",
        57 => "RKEY",
        58 => "TALINK",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        100 => "UINFO",
        101 => "UID",
        102 => "GID",
        103 => "UNSPEC",
        104 => "NID",
        105 => "L32",
        106 => "L64",
        107 => "LP",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        258 => "AVC",
        259 => "DOA",
        260 => "AMTRELAY",
        261 => "RESINFO",
        32768 => "TA",
        32769 => "DLV",
        _ => return None,
    })
}

/// IANA mnemonic of a query/record type (`A`, `AAAA`, …, `TYPE65280`).
#[must_use]
pub fn qtype_name(t: u16) -> String {
    qtype_str(t).map_or_else(|| format!("TYPE{t}"), str::to_owned)
}

/// IANA mnemonic of an rcode, without allocating; None for unassigned ones.
/// 16 is BADVERS when it comes from EDNS (BADSIG in TSIG records, which
/// carry their own error field, never the message rcode).
#[must_use]
pub fn rcode_str(r: u16) -> Option<&'static str> {
    Some(match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        _ => return None,
    })
}

/// IANA mnemonic of an rcode (`NOERROR`, `NXDOMAIN`, …, `RCODE30`).
#[must_use]
pub fn rcode_name(r: u16) -> String {
    rcode_str(r).map_or_else(|| format!("RCODE{r}"), str::to_owned)
}

/// A record type as it is on the wire: shown (`Display`, JSON) as its
/// mnemonic, `A`, `AAAA`, … or `TYPE65280`, exactly as [`qtype_name`]
/// spells it, and copied for free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RType(pub u16);

impl RType {
    /// The mnemonic when the type has one (no allocation).
    #[must_use]
    pub fn mnemonic(self) -> Option<&'static str> {
        qtype_str(self.0)
    }
}

impl std::fmt::Display for RType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mnemonic() {
            Some(s) => f.write_str(s),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl Serialize for RType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.mnemonic() {
            Some(m) => s.serialize_str(m),
            None => s.collect_str(self),
        }
    }
}

/// Compares with a mnemonic (`rtype == "A"`), as the old string field did.
impl PartialEq<&str> for RType {
    fn eq(&self, o: &&str) -> bool {
        match self.mnemonic() {
            Some(m) => m == *o,
            // `TYPE` and the number in canonical decimal, as `Display` writes it.
            None => o.strip_prefix("TYPE").is_some_and(|n| {
                n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0')) && n.parse() == Ok(self.0)
            }),
        }
    }
}
