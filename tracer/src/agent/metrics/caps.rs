//! The cardinality caps in front of the metric families: however many pods,
//! drop reasons or node pairs the node sees, each label dimension keeps its
//! first `max` values and folds the rest into [`OTHER`]. Admitted values are
//! interned, so a label set costs no allocation once its values were seen.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use super::OTHER;
use crate::hash::{FastMap, FastSet};

/// A label value: a static string or one interned by a cap. Compared and
/// hashed by its text, so both forms of the same value are one series.
#[derive(Clone, Debug)]
pub(crate) enum Lv {
    Static(&'static str),
    Interned(Arc<str>),
}

/// Label value of what is not attributed to a pod.
pub(crate) const NONE: Lv = Lv::Static("");
/// Label value past a cap.
pub(crate) const FOLDED: Lv = Lv::Static(OTHER);

impl Lv {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Interned(s) => s,
        }
    }
}

impl PartialEq for Lv {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Lv {}

impl Hash for Lv {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Lv {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the sets consistent.
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A bounded set of label values: the first `max` are kept, later ones fold into [`OTHER`].
#[derive(Debug)]
pub(crate) struct Capped {
    max: usize,
    seen: RwLock<FastSet<Arc<str>>>,
}

impl Capped {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, seen: RwLock::new(FastSet::default()) }
    }

    pub(crate) fn admit(&self, v: &str) -> Lv {
        if let Some(s) = read(&self.seen).get(v) {
            return Lv::Interned(s.clone());
        }
        let mut seen = write(&self.seen);
        if let Some(s) = seen.get(v) {
            return Lv::Interned(s.clone());
        }
        if seen.len() < self.max {
            let s: Arc<str> = Arc::from(v);
            seen.insert(s.clone());
            return Lv::Interned(s);
        }
        FOLDED
    }
}

/// A bounded set of label value pairs, admitted as a unit: the first `max`
/// pairs are kept, later ones are refused.
#[derive(Debug)]
pub(crate) struct PairCap {
    max: usize,
    pairs: RwLock<Pairs>,
}

#[derive(Debug, Default)]
struct Pairs {
    by_first: FastMap<Arc<str>, FastSet<Arc<str>>>,
    n: usize,
}

impl Pairs {
    fn get(&self, a: &str, b: &str) -> Option<[Lv; 2]> {
        let (a, set) = self.by_first.get_key_value(a)?;
        Some([Lv::Interned(a.clone()), Lv::Interned(set.get(b)?.clone())])
    }
}

impl PairCap {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, pairs: RwLock::new(Pairs::default()) }
    }

    /// The pair's label values, or None past the cap.
    pub(crate) fn admit(&self, a: &str, b: &str) -> Option<[Lv; 2]> {
        if let Some(v) = read(&self.pairs).get(a, b) {
            return Some(v);
        }
        let mut pairs = write(&self.pairs);
        if let Some(v) = pairs.get(a, b) {
            return Some(v);
        }
        if pairs.n >= self.max {
            return None;
        }
        pairs.n += 1;
        let a = match pairs.by_first.get_key_value(a) {
            Some((k, _)) => k.clone(),
            None => Arc::from(a),
        };
        let b: Arc<str> = Arc::from(b);
        pairs.by_first.entry(a.clone()).or_default().insert(b.clone());
        Some([Lv::Interned(a), Lv::Interned(b)])
    }
}

/// Bounded (namespace, pod) label pairs of one family: namespaces past
/// their cap fold both values, pods past theirs only the pod.
#[derive(Debug)]
pub(crate) struct PodCap {
    namespaces: Capped,
    pods: PairCap,
}

impl PodCap {
    pub(crate) fn new(max_pods: usize, max_namespaces: usize) -> Self {
        Self { namespaces: Capped::new(max_namespaces), pods: PairCap::new(max_pods) }
    }

    /// The `namespace` and `pod` label values (None: not attributed to a pod).
    pub(crate) fn fold(&self, pod: Option<(&str, &str)>) -> [Lv; 2] {
        let Some((ns, name)) = pod else { return [NONE, NONE] };
        let ns = self.namespaces.admit(ns);
        if ns.as_str() == OTHER {
            return [ns, FOLDED];
        }
        self.pods.admit(ns.as_str(), name).unwrap_or([ns, FOLDED])
    }
}
