//! Memory held per 1,000 pods by the metadata index (what a live watch keeps
//! in the [`Enricher`]), measured with a counting allocator. Prints numbers;
//! asserts only that they are bounded, not their values (they depend on the
//! allocator and the pods' shape). Run with `--nocapture` to see them.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::fmt::Write as _;

use ktrace::{
    enrich::{Enricher, Snapshot},
    testkit::alloc::{Counting, live},
};

#[global_allocator]
static A: Counting = Counting;

/// A List of `n` pods shaped like what the watcher keeps (trimmed objects),
/// plus a service per 10 pods and 10 nodes.
fn synthetic_list(n: usize) -> String {
    let mut s = String::from(r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":["#);
    for i in 0..n {
        let (a, b) = (i / 250, i % 250);
        let _ = write!(
            s,
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"namespace":"ns-{}","name":"app-{i}-7d9f8c6b5-x2k4p","uid":"{:08x}-0000-4000-8000-{:012x}","creationTimestamp":"2026-01-01T00:00:00Z","labels":{{"app":"app-{i}","pod-template-hash":"7d9f8c6b5"}}}},"spec":{{"nodeName":"node-{}","hostNetwork":false,"dnsPolicy":"ClusterFirst"}},"status":{{"phase":"Running","podIP":"10.{}.{a}.{b}","podIPs":[{{"ip":"10.{}.{a}.{b}"}}],"hostIP":"192.168.0.{}","containerStatuses":[{{"name":"app","containerID":"containerd://{:064x}"}}]}}}},"#,
            i % 20,
            i,
            i,
            i % 10,
            100 + a / 250,
            100 + a / 250,
            i % 10,
            i
        );
    }
    for i in 0..n / 10 {
        let _ = write!(
            s,
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"namespace":"ns-{}","name":"svc-{i}"}},"spec":{{"clusterIP":"10.96.{}.{}","clusterIPs":["10.96.{}.{}"]}}}},"#,
            i % 20,
            i / 250,
            i % 250,
            i / 250,
            i % 250
        );
    }
    for i in 0..10 {
        let _ = write!(
            s,
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"node-{i}"}},"status":{{"addresses":[{{"type":"InternalIP","address":"192.168.0.{i}"}}]}}}},"#
        );
    }
    s.pop();
    s.push_str("]}");
    s
}

#[test]
fn memory_per_thousand_pods() {
    for n in [1000usize, 10_000] {
        let list = synthetic_list(n);
        let snap = Snapshot::parse(&list, "synthetic").expect("synthetic List parses");
        assert_eq!(snap.pods.len(), n);
        let before = live();
        let e = Enricher::from_snapshot(&snap);
        let index = live() - before;
        assert_eq!(e.counts().0, n);
        // The watcher also keeps each object's trimmed JSON for recorded Lists: about the List's size.
        let per_k = |b: isize| b as f64 / (n as f64 / 1000.0) / 1024.0;
        println!(
            "{n} pods: index {:.0} KiB per 1,000 pods; trimmed JSON kept by a watch {:.0} KiB per 1,000 pods; total {:.0} KiB per 1,000 pods",
            per_k(index),
            per_k(list.len() as isize),
            per_k(index + list.len() as isize)
        );
        // Bounded: well under 10 KiB per pod of index.
        assert!(index > 0 && (index as usize) < n * 10 * 1024, "index {index} bytes for {n} pods");
        drop(e);
    }
}
