//! State shared by the watch tasks and every [`Enricher`](super::super::Enricher)
//! clone: per-kind health (staleness), the trimmed objects, and the throttled
//! `kubectl`-style List that `ktrace record` stores.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};

use crate::enrich::snapshot::{DELETED_AT, NODE_SCOPE, OBSERVED_AT};

/// Kinds watched; index into per-kind state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Pod = 0,
    Service = 1,
    Node = 2,
}

const KINDS: usize = 3;
/// Deleted pods kept in recorded Lists (so replay knows when they ended).
const DELETED_KEEP: Duration = Duration::from_mins(2);
const DELETED_MAX: usize = 1024;
/// Snapshots for captures, at most this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
const NEVER: u64 = u64::MAX;

#[derive(Debug, Default)]
pub(super) struct Objects {
    /// Trimmed JSON per kind, by `namespace/name`.
    pub(super) live: [BTreeMap<String, Box<str>>; KINDS],
    /// Deleted pods, with `ktrace.io/deleted-at`.
    deleted: VecDeque<(Instant, Box<str>)>,
}

#[derive(Debug)]
struct KindHealth {
    synced: AtomicBool,
    /// ms since `started` of the first failure in the current run of failures; `NEVER` when healthy.
    failing_since: AtomicU64,
}

/// State shared by the watch tasks and every [`Enricher`] clone.
#[derive(Debug)]
pub(crate) struct WatchShared {
    started: Instant,
    stale_after: Duration,
    scope_node: Option<String>,
    health: [KindHealth; KINDS],
    pub(super) objects: Mutex<Objects>,
    generation: AtomicU64,
    /// (generation returned last, when).
    polled: Mutex<(u64, Option<Instant>)>,
    pub(super) last_error: Mutex<Option<String>>,
}

/// Keeps the watch tasks alive while any [`Enricher`] clone holds it.
#[derive(Debug)]
pub(crate) struct WatchLink {
    pub(crate) shared: Arc<WatchShared>,
    pub(super) tasks: Vec<tokio::task::AbortHandle>,
    pub(super) stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for WatchLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping the sender ends the background thread's runtime, if any.
        drop(self.stop.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn now_wall_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

impl WatchShared {
    pub(super) fn new(stale_after: Duration, scope_node: Option<String>) -> Self {
        let h = || KindHealth { synced: AtomicBool::new(false), failing_since: AtomicU64::new(NEVER) };
        Self {
            started: Instant::now(),
            stale_after,
            scope_node,
            health: [h(), h(), h()],
            objects: Mutex::new(Objects::default()),
            generation: AtomicU64::new(0),
            polled: Mutex::new((0, None)),
            last_error: Mutex::new(None),
        }
    }

    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn ok(&self, k: Kind) {
        self.health[k as usize].failing_since.store(NEVER, Ordering::Relaxed);
    }

    pub(super) fn synced(&self, k: Kind) {
        self.health[k as usize].synced.store(true, Ordering::Relaxed);
        self.ok(k);
    }

    pub(super) fn fail(&self, k: Kind, what: &str, e: &dyn std::fmt::Display) {
        let h = &self.health[k as usize];
        let first = h.failing_since.compare_exchange(NEVER, self.ms(), Ordering::Relaxed, Ordering::Relaxed).is_ok();
        let msg = format!("{k:?} {what}: {e}");
        if first {
            log::warn!("kubernetes API: {msg} (retrying; attribution uses the last known state)");
        } else {
            log::debug!("kubernetes API: {msg}");
        }
        *lock(&self.last_error) = Some(msg);
    }

    /// See the module documentation.
    pub(crate) fn stale(&self) -> bool {
        let now = self.ms();
        let limit = self.stale_after.as_millis() as u64;
        self.health.iter().any(|h| {
            let since = h.failing_since.load(Ordering::Relaxed);
            (!h.synced.load(Ordering::Relaxed) && now >= limit)
                || (since != NEVER && now.saturating_sub(since) >= limit)
        })
    }

    pub(super) fn all_synced(&self) -> bool {
        self.health.iter().all(|h| h.synced.load(Ordering::Relaxed))
    }

    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The List, if it changed since the last call and that call is a second old.
    pub(crate) fn poll_snapshot(&self) -> Option<String> {
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let mut p = lock(&self.polled);
            if generation == 0 || p.0 == generation || p.1.is_some_and(|t| t.elapsed() < SNAPSHOT_EVERY) {
                return None;
            }
            *p = (generation, Some(Instant::now()));
        }
        Some(self.list_json())
    }

    /// The current objects as a `kubectl get pods,services,nodes -o json` List.
    pub(crate) fn list_json(&self) -> String {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(""));
        meta.insert(OBSERVED_AT.into(), json!(crate::time::rfc3339(now_wall_ns())));
        if let Some(n) = &self.scope_node {
            meta.insert(NODE_SCOPE.into(), json!(n));
        }
        let mut out =
            format!("{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"metadata\":{},\"items\":[", Value::Object(meta));
        let mut o = lock(&self.objects);
        while o.deleted.front().is_some_and(|(t, _)| t.elapsed() > DELETED_KEEP) {
            o.deleted.pop_front();
        }
        let mut first = true;
        for item in o.live.iter().flat_map(BTreeMap::values).chain(o.deleted.iter().map(|(_, j)| j)) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(item);
        }
        out.push_str("]}");
        out
    }
}

/// Keeps a deleted pod, stamped with when it went, for recorded Lists.
pub(super) fn remember_deleted(o: &mut Objects, old: Option<&str>, v: &Value, at: i128) {
    let mut v = old.and_then(|j| serde_json::from_str::<Value>(j).ok()).unwrap_or_else(|| v.clone());
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = ann.as_object_mut() {
            a.insert(DELETED_AT.into(), json!(crate::time::rfc3339(at)));
        }
    }
    o.deleted.push_back((Instant::now(), v.to_string().into()));
    while o.deleted.len() > DELETED_MAX {
        o.deleted.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_follows_failures() {
        let s = WatchShared::new(Duration::ZERO, None);
        assert!(s.stale(), "never listed");
        for k in [Kind::Pod, Kind::Service, Kind::Node] {
            s.synced(k);
        }
        assert!(!s.stale());
        s.fail(Kind::Service, "watch", &"refused");
        assert!(s.stale());
        s.ok(Kind::Service);
        assert!(!s.stale());
        let slow = WatchShared::new(Duration::from_hours(1), None);
        slow.fail(Kind::Pod, "list", &"refused");
        assert!(!slow.stale(), "not before stale_after");
    }

    #[test]
    fn snapshots_are_throttled_lists() {
        let s = WatchShared::new(Duration::from_mins(1), Some("node-a".into()));
        assert!(s.poll_snapshot().is_none(), "nothing yet");
        lock(&s.objects).live[0]
            .insert("a/p".into(), r#"{"kind":"Pod","metadata":{"namespace":"a","name":"p"}}"#.into());
        s.changed();
        let l = s.poll_snapshot().unwrap();
        let snap = crate::enrich::Snapshot::parse(&l, "t").unwrap();
        assert_eq!(snap.pods.len(), 1);
        assert_eq!(snap.scope_node.as_deref(), Some("node-a"));
        assert!(snap.taken_at_ns.is_some());
        s.changed();
        assert!(s.poll_snapshot().is_none(), "within a second of the last");
    }
}
