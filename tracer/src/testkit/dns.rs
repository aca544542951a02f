//! DNS message builders.

use std::net::Ipv4Addr;

/// Appends `name` in DNS wire form (labels, no compression; a trailing dot is ignored).
pub fn put_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// A DNS message with the header flags `flags`, one question (class IN),
/// the `answers` (type, rdata; class IN, TTL 300, named by a pointer to the
/// question) and, when `opt_ttl` is set, an OPT record with that TTL (the
/// extended rcode and flags): the decoder's tests build every shape with it.
#[must_use]
pub fn build(id: u16, flags: u16, qname: &str, qtype: u16, answers: &[(u16, &[u8])], opt_ttl: Option<u32>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&u16::from(opt_ttl.is_some()).to_be_bytes());
    put_name(&mut b, qname);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    for (t, rd) in answers {
        b.extend_from_slice(&[0xc0, 12]);
        b.extend_from_slice(&t.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&300u32.to_be_bytes());
        b.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        b.extend_from_slice(rd);
    }
    if let Some(ttl) = opt_ttl {
        b.push(0);
        b.extend_from_slice(&41u16.to_be_bytes());
        b.extend_from_slice(&1232u16.to_be_bytes());
        b.extend_from_slice(&ttl.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
    }
    b
}

/// A DNS message: header (RD; for a response also QR and RA, and `rcode`),
/// one question (class IN), and for a response with `answer` one A record
/// (TTL 30, the name compressed as a pointer to the question, as servers do).
#[must_use]
pub fn message(id: u16, response: bool, rcode: u8, qname: &str, qtype: u16, answer: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + qname.len());
    m.extend_from_slice(&id.to_be_bytes());
    let flags: u16 = if response { 0x8180 | u16::from(rcode & 0x0f) } else { 0x0100 };
    m.extend_from_slice(&flags.to_be_bytes());
    let ancount = u16::from(response && answer.is_some());
    for v in [1u16, ancount, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    put_name(&mut m, qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let (true, Some(ip)) = (response, answer) {
        push_answer(&mut m, 1, 30, &ip.octets());
    }
    m
}

/// A query (RD, class IN) for `qname`.
#[must_use]
pub fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
    message(id, false, 0, qname, qtype, None)
}

/// The response to `query` (QR, RA, `rcode`), with one answer under a
/// pointer to the question name, TTL 0, when `rdata` is given (4 bytes: A,
/// otherwise AAAA) — what dnsmasq sends for its `host-record`s.
#[must_use]
pub fn response_to(query: &[u8], rcode: u8, rdata: Option<&[u8]>) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80 | rcode;
    if let Some(rdata) = rdata {
        r[7] = 1;
        push_answer(&mut r, if rdata.len() == 4 { 1 } else { 28 }, 0, rdata);
    }
    r
}

/// Appends one answer record (class IN) named by a pointer to the question at offset 12.
fn push_answer(m: &mut Vec<u8>, rtype: u16, ttl: u32, rdata: &[u8]) {
    m.extend_from_slice(&[0xc0, 0x0c]);
    m.extend_from_slice(&rtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&ttl.to_be_bytes());
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(rdata);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::dns::decode;

    #[test]
    fn builds_what_the_decoder_reads() {
        let q = query(7, "web.shop.svc.cluster.local.", 28);
        let d = decode(&q).expect("query decodes");
        assert_eq!((d.id, d.is_response, d.qname.as_ref(), d.qtype), (7, false, "web.shop.svc.cluster.local", 28));
        let r = message(7, true, 0, "a.b", 1, Some(Ipv4Addr::new(10, 96, 0, 1)));
        let d = decode(&r).expect("response decodes");
        assert_eq!((d.is_response, d.rcode, d.answers.len()), (true, 0, 1));
        let r = response_to(&q, 3, None);
        let d = decode(&r).expect("NXDOMAIN decodes");
        assert_eq!((d.rcode, d.answers.len()), (3, 0));
        let r = response_to(&q, 0, Some(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(decode(&r).expect("AAAA decodes").answers.len(), 1);
    }
}
