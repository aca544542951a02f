//! Schema and policy checks of `deploy/` (no root, no cluster):
//! `cargo test -p ktrace-e2e --test manifests`.
//!
//! Every object is parsed into its typed k8s-openapi struct and serialized
//! back; any key of the YAML missing from the round trip is a field the
//! Kubernetes schema does not have (k8s-openapi ignores unknown fields, the
//! API server rejects them under `kubectl apply`'s strict validation). Then
//! the policy: what the agent may do on the node, how its pieces refer to
//! each other, and that its arguments parse with ktrace's own CLI.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Namespace, PodSpec, Secret, Service, ServiceAccount, Volume},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

const NAMESPACE: &str = "ktrace";
/// The label selector `ktrace dns --agents` lists agent pods with.
const DISCOVERY_LABEL: (&str, &str) = ("app.kubernetes.io/name", "ktrace-agent");
/// Capabilities the agent gets; each needs a comment in daemonset.yaml saying why.
const CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"];
/// The only host paths the agent may write: its unix socket and its captures.
const WRITABLE_HOST_PATHS: [&str; 2] = ["/run/ktrace", "/var/lib/ktrace"];
const GRPC_PORT: i32 = 4247;
const METRICS_PORT: i32 = 9967;
const SECRET_TOKEN: &str = "ktrace-agent-token";
const SECRET_TLS: &str = "ktrace-agent-tls";

/// One YAML document of a manifest file.
#[derive(Clone, Debug)]
struct Doc {
    /// File name relative to deploy/, for messages.
    file: String,
    raw: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.raw["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.raw["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        self.raw["metadata"]["namespace"].as_str()
    }
    fn id(&self) -> String {
        format!("{} {}/{} ({})", self.kind(), self.namespace().unwrap_or("-"), self.name(), self.file)
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy")
}

/// Every document of a (multi-document) YAML text; empty documents skipped.
fn parse_yaml(text: &str, file: &str) -> Vec<Doc> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{file}: bad YAML: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .map(|raw| Doc { file: file.to_owned(), raw })
        .collect()
}

fn read(rel: &str) -> String {
    let p = deploy_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The files `kubectl apply -f deploy/` applies, in the order it applies them:
/// the directory's own `*.json`, `*.yaml` and `*.yml` files (no
/// subdirectories without `-R`), sorted by name.
fn applied_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.expect("readable deploy/ entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| [".json", ".yaml", ".yml"].iter().any(|x| n.ends_with(x)))
        .collect();
    names.sort();
    names
}

/// Every object `kubectl apply -f deploy/` creates, in its order.
fn applied_docs() -> Vec<Doc> {
    applied_files().iter().flat_map(|f| parse_yaml(&read(f), f)).collect()
}

fn only<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let hits: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind && d.name() == name).collect();
    assert_eq!(hits.len(), 1, "want exactly one {kind} {name}, found {}", hits.len());
    hits[0]
}

fn typed<T: DeserializeOwned>(doc: &Doc) -> T {
    serde_json::from_value(doc.raw.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc.id()))
}

/// Parses `raw` as `T`, serializes it back and lists every key path of `raw`
/// the round trip lost (unknown or misspelled fields) or whose value changed.
fn roundtrip_errors<T: DeserializeOwned + Serialize>(raw: &Value) -> Vec<String> {
    let back = match serde_json::from_value::<T>(raw.clone()).and_then(|t| serde_json::to_value(&t)) {
        Ok(v) => v,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut errs = Vec::new();
    diff(raw, &back, "", &mut errs);
    errs
}

fn diff(orig: &Value, back: &Value, path: &str, errs: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => diff(v, bv, &p, errs),
                    None => errs.push(format!("{p}: not a field of the Kubernetes schema")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            if o.len() == b.len() {
                for (i, (v, bv)) in o.iter().zip(b).enumerate() {
                    diff(v, bv, &format!("{path}[{i}]"), errs);
                }
            } else {
                errs.push(format!("{path}: {} items written, {} understood", o.len(), b.len()));
            }
        }
        (o, b) if std::mem::discriminant(o) != std::mem::discriminant(b) => {
            errs.push(format!("{path}: written as {o}, understood as {b}"));
        }
        (o, b) if o != b => errs.push(format!("{path}: {o} became {b}")),
        _ => {}
    }
}

/// Schema errors of one object, by its kind; an unexpected kind is an error.
fn schema_errors(doc: &Doc) -> Vec<String> {
    let r = &doc.raw;
    match (r["apiVersion"].as_str().unwrap_or(""), doc.kind()) {
        ("v1", "Namespace") => roundtrip_errors::<Namespace>(r),
        ("v1", "ServiceAccount") => roundtrip_errors::<ServiceAccount>(r),
        ("v1", "Service") => roundtrip_errors::<Service>(r),
        ("v1", "Secret") => roundtrip_errors::<Secret>(r),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip_errors::<ClusterRole>(r),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => roundtrip_errors::<ClusterRoleBinding>(r),
        ("rbac.authorization.k8s.io/v1", "Role") => roundtrip_errors::<Role>(r),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => roundtrip_errors::<RoleBinding>(r),
        ("apps/v1", "DaemonSet") => roundtrip_errors::<DaemonSet>(r),
        (v, k) => vec![format!("unexpected object {v} {k}: add it to schema_errors")],
    }
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding")
}

/// A JSON patch (RFC 6902) with the operations kustomize patches use here.
fn apply_json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("a JSON patch is a list")? {
        let path = op["path"].as_str().ok_or("op without path")?;
        let (parent, last) = path.rsplit_once('/').ok_or_else(|| format!("bad path {path}"))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let value = op.get("value").cloned();
        let target = doc.pointer_mut(parent).ok_or_else(|| format!("{path}: no {parent} to patch"))?;
        match (op["op"].as_str(), target, value) {
            (Some("add"), Value::Array(a), Some(v)) if last == "-" => a.push(v),
            (Some("add"), Value::Array(a), Some(v)) => {
                let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                if i > a.len() {
                    return Err(format!("{path}: index past the end"));
                }
                a.insert(i, v);
            }
            (Some("add" | "replace"), Value::Object(m), Some(v)) => {
                m.insert(last, v);
            }
            (o, _, _) => return Err(format!("{path}: unsupported op {o:?}")),
        }
    }
    Ok(())
}

/// The TLS component of deploy/tls: its patch and what it targets.
fn tls_component() -> (Value, Value) {
    let docs = parse_yaml(&read("tls/Kustomization"), "tls/Kustomization");
    assert_eq!(docs.len(), 1);
    let k = &docs[0].raw;
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
    assert_eq!(k["kind"], "Component");
    let patches = k["patches"].as_array().expect("patches");
    assert_eq!(patches.len(), 1);
    let text = patches[0]["patch"].as_str().expect("inline patch");
    let ops = parse_yaml(text, "tls/Kustomization patch");
    assert_eq!(ops.len(), 1);
    (patches[0]["target"].clone(), ops[0].raw.clone())
}

/// The `DaemonSet` as the TLS component makes it.
fn daemonset_with_tls() -> Doc {
    let docs = applied_docs();
    let mut ds = only(&docs, "DaemonSet", "ktrace-agent").clone();
    let (target, ops) = tls_component();
    assert_eq!(target["kind"], "DaemonSet");
    assert_eq!(target["name"], ds.name());
    assert_eq!(format!("{}/{}", target["group"].as_str().unwrap(), target["version"].as_str().unwrap()), "apps/v1");
    apply_json_patch(&mut ds.raw, &ops).unwrap_or_else(|e| panic!("tls patch: {e}"));
    ds.file = "daemonset.yaml + tls/Kustomization".into();
    ds
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
}

fn agent_container(ds: &DaemonSet) -> &Container {
    let spec = pod_spec(ds);
    assert_eq!(spec.containers.len(), 1, "one container");
    assert!(spec.init_containers.is_none(), "no init containers");
    &spec.containers[0]
}

/// `--flag=value`, `--flag value` and bare `--flag` arguments after the subcommand.
fn flags(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else { continue };
        if let Some((f, v)) = flag.split_once('=') {
            out.push((f.to_owned(), Some(v.to_owned())));
        } else {
            let v = it.next_if(|n| !n.starts_with('-')).cloned();
            out.push((flag.to_owned(), v));
        }
    }
    out
}

fn flag_values(args: &[String], name: &str) -> Vec<String> {
    flags(args).into_iter().filter(|(f, _)| f == name).map(|(_, v)| v.unwrap_or_default()).collect()
}

fn one_flag(args: &[String], name: &str) -> String {
    let v = flag_values(args, name);
    assert_eq!(v.len(), 1, "want one --{name}, got {v:?}");
    v[0].clone()
}

fn volume<'a>(spec: &'a PodSpec, name: &str) -> &'a Volume {
    spec.volumes.iter().flatten().find(|v| v.name == name).unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mount whose path holds `path`, with its volume; the deepest wins.
fn mount_for<'a>(ds: &'a DaemonSet, path: &str) -> (&'a k8s_openapi::api::core::v1::VolumeMount, &'a Volume) {
    let c = agent_container(ds);
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path == m.mount_path || path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/'))))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{path} is on no volume (the root filesystem is read-only)"));
    (m, volume(pod_spec(ds), &m.name))
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn set<'a>(v: impl IntoIterator<Item = &'a String>) -> BTreeSet<&'a str> {
    v.into_iter().map(String::as_str).collect()
}

fn rules_grant(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(r.non_resource_urls.is_none(), "no non-resource URLs");
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    let names = r.resource_names.as_ref().map_or(String::new(), |n| format!(" {}", n.join(",")));
                    out.insert(format!("{verb} {g}/{res}{names}"));
                }
            }
        }
    }
    out
}

#[test]
fn every_object_fits_the_kubernetes_schema() {
    let mut docs = applied_docs();
    docs.extend(parse_yaml(&read("secret-token.yaml.example"), "secret-token.yaml.example"));
    docs.push(daemonset_with_tls());
    assert!(docs.len() >= 8, "read {} objects", docs.len());
    let mut report = String::new();
    for d in &docs {
        for e in schema_errors(d) {
            let _ = writeln!(report, "{}: {e}", d.id());
        }
    }
    assert!(report.is_empty(), "schema errors:\n{report}");
}

/// The checker itself: what k8s-openapi would silently drop is reported.
#[test]
fn schema_check_reports_unknown_fields_and_wrong_types() {
    let text = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x, namespace: ktrace}\nspec:\n  \
                selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      \
                hostNetwrok: true\n      containers:\n        - name: c\n          \
                securityContext: {privileged: false, readonlyRootFilesystem: true}\n      \
                volumes:\n        - name: v\n          hostPath: {path: /x, type: Directory, readOnly: true}\n";
    let docs = parse_yaml(text, "inline");
    let errs = schema_errors(&docs[0]);
    for want in [
        ".spec.template.spec.hostNetwrok",
        ".spec.template.spec.containers[0].securityContext.readonlyRootFilesystem",
        ".spec.template.spec.volumes[0].hostPath.readOnly",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(&format!("{want}:"))), "{want} not reported in {errs:#?}");
    }
    assert_eq!(errs.len(), 3, "{errs:#?}");

    let bad_type =
        parse_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: \"80\"}]}", "t");
    assert!(!schema_errors(&bad_type[0]).is_empty(), "a quoted port must not pass");
    let unknown = parse_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}", "t");
    assert!(!schema_errors(&unknown[0]).is_empty(), "kinds without a check must not pass");
}

#[test]
fn kubectl_apply_creates_the_namespace_before_what_lives_in_it() {
    let docs = applied_docs();
    let ns_at = docs.iter().position(|d| d.kind() == "Namespace").expect("a Namespace");
    assert_eq!(only(&docs, "Namespace", NAMESPACE).name(), NAMESPACE);
    for d in &docs[..ns_at] {
        assert!(is_cluster_scoped(d.kind()), "{} is applied before its namespace exists", d.id());
    }
}

#[test]
fn objects_live_in_namespace_ktrace() {
    for d in applied_docs() {
        if is_cluster_scoped(d.kind()) {
            assert_eq!(d.namespace(), None, "{}: cluster-scoped objects have no namespace", d.id());
        } else {
            assert_eq!(d.namespace(), Some(NAMESPACE), "{}", d.id());
        }
        let labels: BTreeMap<String, String> =
            serde_json::from_value(d.raw["metadata"]["labels"].clone()).unwrap_or_default();
        assert_eq!(labels.get("app.kubernetes.io/part-of").map(String::as_str), Some("ktrace"), "{}", d.id());
    }
    let ns: Namespace = typed(only(&applied_docs(), "Namespace", NAMESPACE));
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("pod-security.kubernetes.io/enforce").map(String::as_str),
        Some("privileged"),
        "a baseline Pod Security default would reject the agent"
    );
}

#[test]
fn no_secret_is_applied_and_the_token_example_fits() {
    let docs = applied_docs();
    assert!(!docs.iter().any(|d| d.kind() == "Secret"), "a Secret in deploy/ would ship a known token");

    let ex = parse_yaml(&read("secret-token.yaml.example"), "secret-token.yaml.example");
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].namespace(), Some(NAMESPACE));
    let s: Secret = typed(&ex[0]);
    assert_eq!(s.metadata.name.as_deref(), Some(SECRET_TOKEN));
    assert!(s.string_data.unwrap_or_default().contains_key("token"));

    let ds: DaemonSet = typed(only(&docs, "DaemonSet", "ktrace-agent"));
    let token_file = one_flag(agent_container(&ds).args.as_deref().unwrap(), "token-file");
    let (m, v) = mount_for(&ds, &token_file);
    let sec = v.secret.as_ref().expect("--token-file is on a secret volume");
    assert_eq!(sec.secret_name.as_deref(), Some(SECRET_TOKEN));
    assert_eq!(sec.optional, Some(true), "without the Secret the agent must still start (unix socket only)");
    assert_eq!(sec.default_mode, Some(0o400));
    let item = sec.items.iter().flatten().find(|i| i.key == "token").expect("the token key is projected");
    assert_eq!(format!("{}/{}", m.mount_path, item.path), token_file);
    assert_eq!(m.read_only, Some(true));
}

#[test]
fn daemonset_runs_one_unprivileged_agent_per_node() {
    let text = read("daemonset.yaml");
    let ds: DaemonSet = typed(only(&applied_docs(), "DaemonSet", "ktrace-agent"));
    let spec = pod_spec(&ds);
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.host_pid, Some(true));
    assert_eq!(spec.host_ipc, None);
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"), "cluster DNS with hostNetwork");
    assert_eq!(spec.priority_class_name.as_deref(), Some("system-node-critical"));
    assert_eq!(spec.termination_grace_period_seconds, Some(10));
    let tol = spec.tolerations.as_deref().unwrap_or_default();
    assert!(
        tol.iter().any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()),
        "tolerates every taint: {tol:?}"
    );
    let upd = ds.spec.as_ref().unwrap().update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(upd.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(upd.rolling_update.as_ref().and_then(|r| r.max_unavailable.clone()), Some(IntOrString::Int(1)));

    let c = agent_container(&ds);
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "never privileged");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(set(caps.drop.iter().flatten()), BTreeSet::from(["ALL"]));
    assert_eq!(set(caps.add.iter().flatten()), BTreeSet::from(CAPABILITIES), "the documented capabilities exactly");
    // The API server rejects allowPrivilegeEscalation: false with SYS_ADMIN.
    assert!(!caps.add.iter().flatten().any(|c| c.trim_start_matches("CAP_") == "SYS_ADMIN"));
    assert_eq!(sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("Unconfined"));
    assert_eq!(sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()), Some("Unconfined"));
    assert!(spec.security_context.as_ref().is_none_or(|p| p.seccomp_profile.is_none()), "one place for seccomp");
    for cap in CAPABILITIES {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(&format!("# {cap}:"))),
            "daemonset.yaml must say why it adds {cap} (a `# {cap}: ...` comment)"
        );
    }
    for word in ["seccomp", "AppArmor"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with('#') && l.contains(word)),
            "daemonset.yaml must say why {word} is unconfined"
        );
    }

    let res = c.resources.as_ref().expect("resources");
    let limits = res.limits.clone().unwrap_or_default();
    let requests = res.requests.clone().unwrap_or_default();
    assert!(limits.contains_key("memory"), "memory limit");
    assert!(!limits.contains_key("cpu"), "a CPU limit would throttle ring-buffer draining");
    assert!(requests.contains_key("memory") && requests.contains_key("cpu"));
    assert!(c.image.as_deref().is_some_and(|i| i.contains(':') && !i.ends_with(":latest")), "a pinned image");
    // The image `cargo xtask image` builds, at this version (a registry of
    // one's own is a kustomize `images:` override, docs/deploy.md).
    assert_eq!(c.image.as_deref(), Some(xtask::image::image_ref().as_str()), "the image the build produces");

    let env = c.env.as_deref().unwrap_or_default();
    let node = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME");
    let field = node.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("NODE_NAME from fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
}

#[test]
fn only_the_socket_and_capture_host_paths_are_writable() {
    for ds in [only(&applied_docs(), "DaemonSet", "ktrace-agent").clone(), daemonset_with_tls()] {
        let ds: DaemonSet = typed(&ds);
        let spec = pod_spec(&ds);
        let c = agent_container(&ds);
        let mut writable = BTreeSet::new();
        for m in c.volume_mounts.iter().flatten() {
            let v = volume(spec, &m.name);
            assert!(m.sub_path.is_none() && m.sub_path_expr.is_none(), "{}: no subPath", m.mount_path);
            assert_ne!(m.mount_propagation.as_deref(), Some("Bidirectional"), "{}: needs privileged", m.mount_path);
            if let Some(hp) = &v.host_path {
                if m.read_only == Some(true) {
                    assert_eq!(hp.type_.as_deref(), Some("Directory"), "{}: must exist on the host", hp.path);
                } else {
                    assert!(WRITABLE_HOST_PATHS.contains(&hp.path.as_str()), "{} must be mounted read-only", hp.path);
                    assert_eq!(hp.type_.as_deref(), Some("DirectoryOrCreate"));
                    assert_eq!(m.mount_path, hp.path, "the same path inside and out");
                    writable.insert(hp.path.clone());
                }
            } else if v.secret.is_some() {
                assert_eq!(m.read_only, Some(true), "{}", m.mount_path);
            } else {
                assert!(v.empty_dir.is_some(), "{}: unexpected volume type", m.name);
                assert_eq!(m.mount_path, "/tmp");
            }
        }
        assert_eq!(writable, WRITABLE_HOST_PATHS.iter().map(|p| (*p).to_owned()).collect());
        for v in spec.volumes.iter().flatten() {
            let used = c.volume_mounts.iter().flatten().any(|m| m.name == v.name);
            assert!(used, "volume {} is mounted nowhere", v.name);
        }
        for p in ["/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup"] {
            let (m, v) = mount_for(&ds, p);
            assert_eq!(m.mount_path, p);
            assert_eq!(v.host_path.as_ref().map(|h| h.path.as_str()), Some(p), "{p} comes from the host");
        }
    }
}

#[test]
fn args_listen_where_probes_service_and_volumes_expect() {
    let docs = applied_docs();
    let ds: DaemonSet = typed(only(&docs, "DaemonSet", "ktrace-agent"));
    let c = agent_container(&ds);
    let args = c.args.as_deref().expect("args");
    assert_eq!(c.command.as_deref(), Some(&["ktrace".to_owned()][..]));
    assert_eq!(args.first().map(String::as_str), Some("agent"));
    let listen = flag_values(args, "listen");
    assert_eq!(listen, ["unix:/run/ktrace/agent.sock", "0.0.0.0:4247"]);
    assert_eq!(one_flag(args, "metrics"), format!("0.0.0.0:{METRICS_PORT}"));
    assert_eq!(one_flag(args, "token-file"), "/etc/ktrace/token/token");
    assert_eq!(one_flag(args, "capture-dir"), "/var/lib/ktrace/captures");
    for f in ["no-kube-api", "kubeconfig", "kube-snapshot"] {
        assert!(flag_values(args, f).is_empty(), "--{f}: in a pod the agent uses its service account");
    }

    // The unix socket and the captures land on the writable host paths.
    let sock = listen[0].strip_prefix("unix:").unwrap();
    for p in [sock, &one_flag(args, "capture-dir")] {
        let (m, v) = mount_for(&ds, p);
        assert_ne!(m.read_only, Some(true), "{p} is not writable");
        assert!(v.host_path.is_some(), "{p} must outlive the pod");
    }

    // Ports: named, and the ones the agent listens on.
    let ports: BTreeMap<&str, i32> =
        c.ports.iter().flatten().map(|p| (p.name.as_deref().unwrap_or(""), p.container_port)).collect();
    assert_eq!(ports, BTreeMap::from([("grpc", GRPC_PORT), ("metrics", METRICS_PORT)]));
    assert!(listen.contains(&format!("0.0.0.0:{GRPC_PORT}")));
    for p in c.ports.iter().flatten() {
        assert!(p.host_port.is_none_or(|h| h == p.container_port), "hostNetwork: hostPort == containerPort");
    }

    // Probes: liveness /healthz, readiness /readyz, on the metrics port.
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{path} probe"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert!(
            matches!(&get.port, IntOrString::String(s) if s == "metrics")
                || matches!(get.port, IntOrString::Int(METRICS_PORT)),
            "{path} probe on {:?}",
            get.port
        );
    }

    // The metrics Service: every agent pod, by the named port.
    let svc: Service = typed(only(&docs, "Service", "ktrace-agent"));
    let sspec = svc.spec.as_ref().expect("service spec");
    let pod_labels = ds.spec.as_ref().unwrap().template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap();
    assert!(labels_match(sspec.selector.as_ref().unwrap(), &pod_labels), "the Service selects the agent pods");
    let sp = sspec.ports.iter().flatten().find(|p| p.name.as_deref() == Some("metrics")).expect("port `metrics`");
    assert_eq!(sp.port, METRICS_PORT);
    assert_eq!(sp.target_port, Some(IntOrString::String("metrics".into())));
    assert_eq!(sspec.ports.as_ref().unwrap().len(), 1, "gRPC is reached by pod IP, not through the Service");
    let ann = svc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(ann.get("prometheus.io/port"), Some(&METRICS_PORT.to_string()));
    assert_eq!(ann.get("prometheus.io/path").map(String::as_str), Some("/metrics"));
}

#[test]
fn labels_let_the_cli_and_the_controller_find_the_agents() {
    let ds: DaemonSet = typed(only(&applied_docs(), "DaemonSet", "ktrace-agent"));
    let spec = ds.spec.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("pod labels");
    let sel = spec.selector.match_labels.clone().expect("matchLabels");
    assert!(spec.selector.match_expressions.is_none());
    assert!(labels_match(&sel, &pod_labels), "selector {sel:?} must match template labels {pod_labels:?}");
    let (k, v) = DISCOVERY_LABEL;
    assert_eq!(pod_labels.get(k).map(String::as_str), Some(v), "`ktrace dns --agents` lists pods by {k}={v}");
    assert_eq!(pod_labels.get("app.kubernetes.io/part-of").map(String::as_str), Some("ktrace"));
    assert_eq!(ds.metadata.namespace.as_deref(), Some(NAMESPACE), "`--agents` looks in namespace {NAMESPACE}");
}

#[test]
fn rbac_gives_the_agent_read_only_access() {
    let docs = applied_docs();
    let ds: DaemonSet = typed(only(&docs, "DaemonSet", "ktrace-agent"));
    let sa_name = pod_spec(&ds).service_account_name.clone().expect("serviceAccountName");
    let sa = only(&docs, "ServiceAccount", &sa_name);
    assert_eq!(sa.namespace(), ds.metadata.namespace.as_deref());
    let sa: ServiceAccount = typed(sa);
    assert_ne!(sa.automount_service_account_token, Some(false), "the agent uses the service account token");
    assert_ne!(pod_spec(&ds).automount_service_account_token, Some(false));

    // Bound, by a ClusterRoleBinding, to a ClusterRole with exactly the
    // agent's rules (those of the original deploy/rbac.yaml).
    let bindings: Vec<ClusterRoleBinding> =
        docs.iter().filter(|d| d.kind() == "ClusterRoleBinding").map(typed::<ClusterRoleBinding>).collect();
    let bound: Vec<&ClusterRoleBinding> = bindings
        .iter()
        .filter(|b| {
            b.subjects
                .iter()
                .flatten()
                .any(|s| s.kind == "ServiceAccount" && s.name == sa_name && s.namespace.as_deref() == Some(NAMESPACE))
        })
        .collect();
    assert_eq!(bound.len(), 1, "one ClusterRoleBinding for {sa_name}");
    let rr = &bound[0].role_ref;
    assert_eq!((rr.api_group.as_str(), rr.kind.as_str()), ("rbac.authorization.k8s.io", "ClusterRole"));
    let role: ClusterRole = typed(only(&docs, "ClusterRole", &rr.name));
    assert!(role.aggregation_rule.is_none());
    let want: BTreeSet<String> = ["get", "list", "watch"]
        .iter()
        .flat_map(|v| ["/pods", "/services", "/nodes", "discovery.k8s.io/endpointslices"].map(|r| format!("{v} {r}")))
        .collect();
    assert_eq!(rules_grant(role.rules.as_deref().unwrap_or_default()), want);

    // Nothing else in deploy/ binds anything to the agent, or to anybody.
    assert!(!docs.iter().any(|d| d.kind() == "RoleBinding"), "no RoleBinding is applied");
    assert_eq!(bindings.len(), 1, "only the agent's binding is applied");

    // The CLI's ClusterRole: list agent pods, read their token; bound by the user.
    let cli: ClusterRole = typed(only(&docs, "ClusterRole", "ktrace-cli"));
    assert_eq!(
        rules_grant(cli.rules.as_deref().unwrap_or_default()),
        BTreeSet::from(["get /pods".into(), "list /pods".into(), format!("get /secrets {SECRET_TOKEN}")])
    );
}

#[test]
fn kustomization_lists_every_manifest_and_only_those() {
    let docs = parse_yaml(&read("Kustomization"), "Kustomization");
    assert_eq!(docs.len(), 1);
    let k = &docs[0].raw;
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<String> = serde_json::from_value(k["resources"].clone()).expect("resources: a list of files");
    for f in &listed {
        assert!(deploy_dir().join(f).is_file(), "Kustomization lists {f}, which does not exist");
    }
    let listed: BTreeSet<String> = listed.into_iter().collect();
    let files: BTreeSet<String> = applied_files().into_iter().collect();
    assert_eq!(listed, files, "`kubectl apply -k deploy/` and `-f deploy/` must apply the same files");
    // Nothing that rewrites names, namespaces or labels: both ways give the same objects.
    let keys: BTreeSet<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["apiVersion", "kind", "resources"]), "components: stays commented out");
    let text = read("Kustomization");
    assert!(text.contains("# components:\n#   - tls\n"), "the documented way to turn TLS on");
    // No kustomization file named *.yaml in deploy/, which `kubectl apply -f deploy/` would apply.
    assert!(applied_docs().iter().all(|d| !d.raw["apiVersion"].as_str().unwrap_or("").starts_with("kustomize.")));
}

#[test]
fn tls_component_adds_mutual_tls_from_its_secret() {
    let ds_doc = daemonset_with_tls();
    let ds: DaemonSet = typed(&ds_doc);
    let args = agent_container(&ds).args.clone().unwrap();
    let spec = pod_spec(&ds);
    for (flag, key) in [("tls-cert", "tls.crt"), ("tls-key", "tls.key"), ("tls-client-ca", "ca.crt")] {
        let path = one_flag(&args, flag);
        let (m, v) = mount_for(&ds, &path);
        assert_eq!(path, format!("{}/{key}", m.mount_path), "--{flag}");
        assert_eq!(m.read_only, Some(true));
        let sec = v.secret.as_ref().expect("TLS files come from a Secret");
        assert_eq!(sec.secret_name.as_deref(), Some(SECRET_TLS));
        assert_ne!(sec.optional, Some(true), "TLS asked for but missing must not start without it");
        assert_eq!(sec.default_mode, Some(0o400));
    }
    // The token stays required on top of TLS, and the rest is untouched.
    let base: DaemonSet = typed(only(&applied_docs(), "DaemonSet", "ktrace-agent"));
    let base_args = agent_container(&base).args.clone().unwrap();
    assert_eq!(args[..base_args.len()], base_args[..]);
    assert_eq!(spec.volumes.as_ref().unwrap().len(), pod_spec(&base).volumes.as_ref().unwrap().len() + 1);
}

/// `kubectl kustomize` (kubectl's built-in kustomize, offline) builds both
/// documented TLS routes and the base to the objects these tests check.
#[test]
fn kubectl_kustomize_builds_what_the_tests_check() {
    if std::process::Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("kubectl not found: kustomize build not checked (the other tests still check the files)");
        return;
    }
    let build = |dir: &Path| -> Vec<Doc> {
        let out = std::process::Command::new("kubectl").arg("kustomize").arg(dir).output().expect("kubectl runs");
        assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
        parse_yaml(&String::from_utf8(out.stdout).unwrap(), "kustomize build")
    };
    let key = |d: &Doc| (d.kind().to_owned(), d.namespace().unwrap_or("").to_owned(), d.name().to_owned());

    let files = applied_docs();
    let built = build(&deploy_dir());
    let want: BTreeMap<_, _> = files.iter().map(|d| (key(d), d.raw.clone())).collect();
    let got: BTreeMap<_, _> = built.iter().map(|d| (key(d), d.raw.clone())).collect();
    assert_eq!(got, want, "kubectl apply -k deploy/ must create what kubectl apply -f deploy/ creates");

    // Scratch copies: deploy/ with `components: - tls` uncommented, and
    // deploy/ untouched under an overlay of the user's own.
    let guard = TempDir(std::env::temp_dir().join(format!("ktrace-manifests-{}", std::process::id())));
    let tmp = &guard.0;
    let _ = std::fs::remove_dir_all(tmp);
    let copy = |to: &Path| {
        std::fs::create_dir_all(to.join("tls")).unwrap();
        for f in applied_files().iter().chain(["Kustomization".to_owned(), "tls/Kustomization".to_owned()].iter()) {
            std::fs::copy(deploy_dir().join(f), to.join(f)).unwrap();
        }
    };
    let uncommented = tmp.join("a").join("deploy");
    copy(&uncommented);
    let k = read("Kustomization").replace("# components:\n#   - tls\n", "components:\n  - tls\n");
    std::fs::write(uncommented.join("Kustomization"), k).unwrap();
    copy(&tmp.join("b").join("deploy"));
    let overlay = tmp.join("b").join("overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(overlay.join("kustomization.yaml"), "resources:\n  - ../deploy\ncomponents:\n  - ../deploy/tls\n")
        .unwrap();
    let tls = daemonset_with_tls();
    for dir in [&uncommented, &overlay] {
        let built = build(dir);
        let ds = built.iter().find(|d| d.kind() == "DaemonSet").expect("a DaemonSet");
        assert!(ds.raw == tls.raw, "TLS via {}: kustomize built\n{:#}\nwant\n{:#}", dir.display(), ds.raw, tls.raw);
        assert_eq!(built.len(), files.len());
    }
}

/// Removed when dropped, also when a test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every flag the `DaemonSet` passes is one `ktrace agent` accepts, with the
/// meaning the manifests rely on, with and without TLS.
#[test]
fn daemonset_args_parse_with_the_ktrace_cli() {
    use clap::Parser as _;
    use ktrace::{agent::server::ListenAddr, cli::Command};
    for (doc, tls) in
        [(only(&applied_docs(), "DaemonSet", "ktrace-agent").clone(), false), (daemonset_with_tls(), true)]
    {
        let ds: DaemonSet = typed(&doc);
        let c = agent_container(&ds);
        let argv: Vec<String> = c.command.iter().flatten().chain(c.args.iter().flatten()).cloned().collect();
        let cli = ktrace::cli::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{}: `{}` does not parse: {e}", doc.file, argv.join(" ")));
        let Command::Agent(a) = cli.cmd else { panic!("{}: not `ktrace agent`", doc.file) };
        assert!(matches!(&a.listen[..], [ListenAddr::Unix(p), ListenAddr::Tcp(t)]
            if p == Path::new("/run/ktrace/agent.sock") && t.port() == 4247 && t.ip().is_unspecified()));
        assert_eq!(a.metrics.map(|m| m.port()), Some(9967));
        assert_eq!(a.token_file.as_deref(), Some(Path::new("/etc/ktrace/token/token")));
        assert_eq!(a.capture_dir, Path::new("/var/lib/ktrace/captures"));
        assert_eq!(a.tls_cert.is_some() && a.tls_key.is_some() && a.tls_client_ca.is_some(), tls, "{}", doc.file);
        assert!(a.socket_group.is_none(), "--socket-group needs CAP_CHOWN, which the agent does not get");
    }
}
