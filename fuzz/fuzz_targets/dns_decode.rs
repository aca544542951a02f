//! `dns::decode` must return, never panic, on any bytes; a decoded message
//! must respect the documented bounds.
#![no_main]

use ktrace::decode::dns;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = dns::decode(data) {
        assert!(m.answers.len() <= dns::MAX_ANSWERS);
        assert!(m.answers.len() <= usize::from(m.ancount));
        assert!(!m.qname.is_empty());
    }
});
