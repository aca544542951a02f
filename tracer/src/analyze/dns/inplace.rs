//! A list of transactions handed to the analysis one by one where they
//! lie: the analysis reads most of them and puts the few it keeps behind
//! an `Arc`, which then takes the transaction over instead of cloning it.
//!
//! Borrowed (`&Transaction`), a kept one was cloned: on the bench capture,
//! where every transaction is a kept fan-out attempt, 326 instructions and
//! ten atomic updates each, plus its drop later. Drained by value, each
//! ~430-byte transaction was moved out, in and on (~300 instructions).

use std::{marker::PhantomData, mem::ManuallyDrop, sync::Arc};

use super::TxIn;
use crate::model::Transaction;

/// One transaction of a [`drain_in_place`]: dropped where it lies unless
/// [`TxIn::share`] moves it into an `Arc`.
pub struct InPlace<'a>(&'a mut ManuallyDrop<Transaction>);

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        // SAFETY: the list gave up this element (`drain_in_place`), and it
        // is handed out once: dropped here or moved out by `share`, never both.
        unsafe { ManuallyDrop::drop(self.0) };
    }
}

impl TxIn for InPlace<'_> {
    fn tx(&self) -> &Transaction {
        self.0
    }

    fn share(self) -> Arc<Transaction> {
        let me = ManuallyDrop::new(self);
        let src: *const Transaction = &raw const **me.0;
        let a = Arc::<Transaction>::new_uninit();
        // Written through the new `Arc`'s own pointer: `Arc::get_mut`
        // checks uniqueness with a locked compare-exchange.
        let dst = Arc::as_ptr(&a).cast_mut().cast::<Transaction>();
        // SAFETY: the `Arc` was just made, so nothing else can see its
        // value; the transaction is copied once, straight into it, and its
        // old place is never read or dropped again (`me` is not dropped).
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst, 1);
            a.assume_init()
        }
    }
}

/// Hands out the transactions of `v` in order, each as an [`InPlace`];
/// `v` is left empty with its allocation. Those not handed out (an
/// iterator dropped early) are dropped with it; after a panic they leak.
pub fn drain_in_place(v: &mut Vec<Transaction>) -> DrainInPlace<'_> {
    let len = v.len();
    // SAFETY: from here on the elements belong to the iterator, which
    // hands each out or drops it exactly once.
    unsafe { v.set_len(0) };
    DrainInPlace { at: v.as_mut_ptr().cast(), left: len, _list: PhantomData }
}

/// The iterator of [`drain_in_place`].
pub struct DrainInPlace<'a> {
    at: *mut ManuallyDrop<Transaction>,
    left: usize,
    _list: PhantomData<&'a mut Vec<Transaction>>,
}

impl<'a> Iterator for DrainInPlace<'a> {
    type Item = InPlace<'a>;

    #[inline]
    fn next(&mut self) -> Option<InPlace<'a>> {
        if self.left == 0 {
            return None;
        }
        // SAFETY: `at` points to the next of `left` initialised elements
        // the list gave up; each is handed out once.
        let t = unsafe { &mut *self.at };
        self.at = self.at.wrapping_add(1);
        self.left -= 1;
        Some(InPlace(t))
    }
}

impl Drop for DrainInPlace<'_> {
    fn drop(&mut self) {
        for t in self.by_ref() {
            drop(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{TxIn, drain_in_place};
    use crate::analyze::pairing::test_util::tx;

    /// Each transaction is dropped or moved exactly once: shared ones
    /// survive in their `Arc`, the rest (read, or never handed out when the
    /// iterator is dropped early) are dropped, and the list comes back
    /// empty with its allocation.
    #[test]
    fn each_transaction_is_moved_or_dropped_once() {
        let name: Arc<str> = Arc::from("a.example");
        let mut v: Vec<_> = (0..5u64)
            .map(|i| {
                let mut t = tx(i, "10.0.0.1:4000", "10.0.0.2:53", "a.example", 1, Some((0, 5, 1)));
                t.qname = Arc::clone(&name);
                t
            })
            .collect();
        let cap = v.capacity();
        assert_eq!(Arc::strong_count(&name), 6);
        let mut kept = Vec::new();
        {
            let mut it = drain_in_place(&mut v);
            let first = it.next().expect("five");
            assert_eq!(first.tx().ts_ns, 0);
            kept.push(first.share());
            drop(it.next());
            let third = it.next().expect("five");
            assert_eq!(third.tx().ts_ns, 2);
            kept.push(third.share());
            // The last two are never handed out.
        }
        assert!(v.is_empty());
        assert_eq!(v.capacity(), cap);
        assert_eq!(Arc::strong_count(&name), 3);
        assert_eq!(kept.iter().map(|t| t.ts_ns).collect::<Vec<_>>(), [0, 2]);
        assert!(kept.iter().all(|t| t.answers.len() == 1 && *t.qname == *"a.example"));
        drop(kept);
        assert_eq!(Arc::strong_count(&name), 1);
    }
}
