//! Answer records of a transaction's line, rendered once per record shape.
//!
//! An answer's owner name and data are `Arc<str>`s the decoder shares (the
//! query's name, interned addresses), so the same pair comes back answer
//! after answer: its `{"data":…,"name":…,"ttl":` and its `,"type":…}` are
//! kept per slot and copied around the TTL, the one part that changes.
//! Field by field an answer was ~170 instructions (two name lookups and
//! six writes, callgrind, hot-cap `-o json`).

use std::sync::Arc;

use super::{JsonCache, put_fixed, put_name, put_qtype, put_u64};
use crate::model::transaction::Answer;

/// Slots, direct-mapped by the two names' addresses: the hot-cap
/// recording's 200 names with an address each fit with few collisions.
pub(super) const SLOTS: usize = 1024;
/// Longest kept `{"data":…,"ttl":` (longer ones are written each time).
const HEAD_BYTES: usize = 128;
/// `,"type":"TYPE65535"}` is 21 bytes: every type's tail fits.
const TAIL_BYTES: usize = 24;

const _: () = assert!(SLOTS.is_power_of_two());

/// One answer shape: what it was rendered from (compared by address; a
/// clone is held, so an address cannot be reused while kept) and its text.
pub(super) struct AnswerSlot {
    key: Option<(Arc<str>, Arc<str>, u16)>,
    head_len: u8,
    tail_len: u8,
    head: [u8; HEAD_BYTES],
    tail: [u8; TAIL_BYTES],
}

impl Default for AnswerSlot {
    fn default() -> Self {
        Self { key: None, head_len: 0, tail_len: 0, head: [0; HEAD_BYTES], tail: [0; TAIL_BYTES] }
    }
}

/// One answer as `serde_json` writes the record's object.
#[inline(always)]
pub(super) fn put_answer(b: &mut Vec<u8>, c: &mut JsonCache, a: &Answer) {
    let (d, n) = (Arc::as_ptr(&a.data).cast::<u8>() as usize, Arc::as_ptr(&a.name).cast::<u8>() as usize);
    // Allocations are 16-byte aligned: the bits above pick the slot.
    let i = ((d >> 4) ^ (n >> 4).rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros());
    if let Some(slot) = c.answers.get(i)
        && let Some((data, name, rtype)) = &slot.key
        && Arc::ptr_eq(data, &a.data)
        && Arc::ptr_eq(name, &a.name)
        && *rtype == a.rtype.0
    {
        put_fixed(b, &slot.head, usize::from(slot.head_len));
        put_u64(b, u64::from(a.ttl));
        put_fixed(b, &slot.tail, usize::from(slot.tail_len));
        return;
    }
    put_new_answer(b, c, a, i);
}

#[inline(never)]
fn put_new_answer(b: &mut Vec<u8>, c: &mut JsonCache, a: &Answer, i: usize) {
    let at = b.len();
    b.extend_from_slice(b"{\"data\":");
    put_name(b, c, &a.data);
    b.extend_from_slice(b",\"name\":");
    put_name(b, c, &a.name);
    b.extend_from_slice(b",\"ttl\":");
    let ttl_at = b.len();
    put_u64(b, u64::from(a.ttl));
    // `RType` prints as `qtype_name` spells a type.
    let tail_at = b.len();
    b.extend_from_slice(b",\"type\":");
    put_qtype(b, a.rtype.0);
    b.push(b'}');
    let (head, tail) = (&b[at..ttl_at], &b[tail_at..]);
    if let Some(slot) = c.answers.get_mut(i)
        && head.len() <= HEAD_BYTES
        && tail.len() <= TAIL_BYTES
    {
        slot.head[..head.len()].copy_from_slice(head);
        slot.tail[..tail.len()].copy_from_slice(tail);
        slot.head_len = head.len() as u8;
        slot.tail_len = tail.len() as u8;
        slot.key = Some((Arc::clone(&a.data), Arc::clone(&a.name), a.rtype.0));
    }
}
