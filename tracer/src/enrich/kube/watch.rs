//! The list + watch loop per kind (see the module documentation of
//! [`super`]), and how each object it sees updates the index and the List.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt as _;
use kube::{
    Api, Resource, ResourceExt as _,
    api::{ListParams, WatchEvent, WatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    KubeSource,
    shared::{Kind, WatchShared, lock, now_wall_ns, remember_deleted},
    trim::{obj_key, pod_info, resolve_host_keys, trim},
};
use crate::enrich::{
    Enricher,
    snapshot::{PodInfo, node_from_json, service_from_json},
};

/// Pages of a list (500 objects each): bounds a runaway `continue` loop.
const MAX_PAGES: usize = 10_000;
/// A list request that takes longer than this is abandoned and retried.
const LIST_TIMEOUT: Duration = Duration::from_mins(1);

/// What each kind's task works with: the index it updates, the state it
/// reports health and objects to, and the settings.
pub(super) struct Ctx {
    pub(super) enricher: Enricher,
    pub(super) shared: Arc<WatchShared>,
    pub(super) cfg: KubeSource,
}

/// Capped exponential backoff with jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self { next: Duration::from_millis(250), max }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 25% jitter so that many agents do not retry in lockstep.
        let jitter = u64::from(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
        d + Duration::from_millis(jitter % (d.as_millis() as u64 / 4 + 1))
    }
}

impl Ctx {
    fn prepare<K: Serialize>(&self, kind: Kind, obj: &K) -> Option<Value> {
        let full = serde_json::to_value(obj).ok()?;
        let mut v = trim(kind, &full);
        if kind == Kind::Pod
            && let Some(root) = &self.cfg.host_keys
        {
            resolve_host_keys(&mut v, root);
        }
        Some(v)
    }

    fn store(&self, kind: Kind, v: &Value) {
        lock(&self.shared.objects).live[kind as usize].insert(obj_key(v), v.to_string().into());
    }

    fn apply(&self, kind: Kind, v: &Value) {
        let now = now_wall_ns();
        match kind {
            Kind::Pod => {
                if let Some(p) = pod_info(v) {
                    self.enricher.write(|ix| ix.upsert_pod(&p, now));
                }
            }
            Kind::Service => {
                if let Some((r, ips, dns)) = service_from_json(v) {
                    self.enricher.write(|ix| ix.upsert_service(&r, &ips, dns));
                }
            }
            Kind::Node => {
                if let Some((n, addrs)) = node_from_json(v) {
                    self.enricher.write(|ix| ix.upsert_node(&n.into(), &addrs));
                }
            }
        }
        self.store(kind, v);
        self.shared.changed();
    }

    fn delete(&self, kind: Kind, v: &Value) {
        let now = now_wall_ns();
        match kind {
            Kind::Pod => {
                if let Some(p) = pod_info(v) {
                    self.enricher.write(|ix| ix.delete_pod(&p, now));
                }
            }
            Kind::Service => {
                if let Some((r, _, _)) = service_from_json(v) {
                    self.enricher.write(|ix| ix.delete_service(&r));
                }
            }
            Kind::Node => {
                if let Some((n, _)) = node_from_json(v) {
                    self.enricher.write(|ix| ix.delete_node(&n));
                }
            }
        }
        let mut o = lock(&self.shared.objects);
        let old = o.live[kind as usize].remove(&obj_key(v));
        if kind == Kind::Pod {
            remember_deleted(&mut o, old.as_deref(), v, now);
        }
        drop(o);
        self.shared.changed();
    }

    /// A complete list: replaces the kind's objects.
    fn replace(&self, kind: Kind, items: &[Value]) {
        let now = now_wall_ns();
        match kind {
            Kind::Pod => {
                let pods: Vec<PodInfo> = items.iter().filter_map(pod_info).collect();
                self.enricher.write(|ix| ix.replace_pods(&pods, now, self.cfg.node.as_deref()));
            }
            Kind::Service => {
                let list: Vec<_> = items.iter().filter_map(service_from_json).collect();
                self.enricher.write(|ix| ix.replace_services(&list));
            }
            Kind::Node => {
                let list: Vec<_> = items.iter().filter_map(node_from_json).map(|(n, a)| (n.into(), a)).collect();
                self.enricher.write(|ix| ix.replace_nodes(&list));
            }
        }
        let fresh: BTreeMap<String, Box<str>> = items.iter().map(|v| (obj_key(v), v.to_string().into())).collect();
        let mut o = lock(&self.shared.objects);
        let old = std::mem::replace(&mut o.live[kind as usize], fresh);
        if kind == Kind::Pod {
            for (k, j) in old {
                if !o.live[Kind::Pod as usize].contains_key(&k)
                    && let Ok(v) = serde_json::from_str::<Value>(&j)
                {
                    remember_deleted(&mut o, None, &v, now);
                }
            }
        }
        drop(o);
        self.shared.changed();
    }
}

/// Lists every page.
async fn list_all<K>(api: &Api<K>, fields: Option<&str>) -> Result<(Vec<K>, String), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut lp = ListParams::default().limit(500);
        if let Some(f) = fields {
            lp = lp.fields(f);
        }
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        items.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((items, page.metadata.resource_version.unwrap_or_default()));
        }
    }
    Ok((items, String::new()))
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// List, then watch, forever (until aborted); see the module documentation.
pub(super) async fn run_kind<K>(api: Api<K>, kind: Kind, fields: Option<String>, ctx: Arc<Ctx>)
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + 'static,
{
    let mut backoff = Backoff::new(ctx.cfg.max_backoff);
    // Idle limit: the server ends a watch at its timeout; silence well past it means a dead peer.
    let idle = ctx.cfg.watch_timeout + Duration::from_secs(30);
    loop {
        let listed = tokio::time::timeout(LIST_TIMEOUT, list_all(&api, fields.as_deref())).await;
        let (items, mut rv) = match listed {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                ctx.shared.fail(kind, "list", &e);
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
            Err(_) => {
                ctx.shared.fail(kind, "list", &"timed out");
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
        };
        let values: Vec<Value> = items.iter().filter_map(|o| ctx.prepare(kind, o)).collect();
        ctx.replace(kind, &values);
        ctx.shared.synced(kind);
        backoff.reset();
        // Watch until the version expires (then relist).
        loop {
            let mut wp = WatchParams::default().timeout(ctx.cfg.watch_timeout.as_secs().clamp(1, 3600) as u32);
            if let Some(f) = &fields {
                wp = wp.fields(f);
            }
            let stream = match api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(e) if is_gone(&e) => break,
                Err(e) => {
                    ctx.shared.fail(kind, "watch", &e);
                    tokio::time::sleep(backoff.step()).await;
                    continue;
                }
            };
            ctx.shared.ok(kind);
            let opened = Instant::now();
            let mut events = 0u64;
            let mut relist = false;
            let mut failed = false;
            let mut stream = std::pin::pin!(stream);
            loop {
                let item = match tokio::time::timeout(idle, stream.next()).await {
                    Ok(Some(i)) => i,
                    Ok(None) => break,
                    Err(_) => {
                        ctx.shared.fail(kind, "watch", &"no data from the server (idle timeout)");
                        failed = true;
                        break;
                    }
                };
                events += 1;
                match item {
                    Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                        rv = o.resource_version().unwrap_or(rv);
                        if let Some(v) = ctx.prepare(kind, &o) {
                            ctx.apply(kind, &v);
                        }
                        ctx.shared.ok(kind);
                    }
                    Ok(WatchEvent::Deleted(o)) => {
                        rv = o.resource_version().unwrap_or(rv);
                        if let Some(v) = ctx.prepare(kind, &o) {
                            ctx.delete(kind, &v);
                        }
                        ctx.shared.ok(kind);
                    }
                    Ok(WatchEvent::Bookmark(b)) => {
                        rv = b.metadata.resource_version;
                        ctx.shared.ok(kind);
                    }
                    Ok(WatchEvent::Error(s)) if s.code == 410 => {
                        relist = true;
                        break;
                    }
                    Ok(WatchEvent::Error(s)) => {
                        ctx.shared.fail(kind, "watch", &format!("{} ({})", s.message, s.code));
                        failed = true;
                        break;
                    }
                    Err(e) if is_gone(&e) => {
                        relist = true;
                        break;
                    }
                    Err(e) => {
                        ctx.shared.fail(kind, "watch", &e);
                        failed = true;
                        break;
                    }
                }
            }
            if relist {
                break;
            }
            // A watch that ends at once and empty is a server in trouble, not a timeout: do not spin.
            if failed || (events == 0 && opened.elapsed() < Duration::from_secs(1)) {
                tokio::time::sleep(backoff.step()).await;
            } else {
                backoff.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let steps: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert!(steps[0] >= Duration::from_millis(250) && steps[0] < Duration::from_millis(320));
        assert!(steps.iter().all(|d| *d <= Duration::from_millis(2500)));
        b.reset();
        assert!(b.step() < Duration::from_millis(320));
    }
}
