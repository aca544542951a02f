//! The underlay programs on tc: TCX links where the kernel has them (>= 6.6),
//! else classic netlink tc filters on a `clsact` qdisc.
//!
//! TCX links are owned by this process and vanish with it, even on SIGKILL.
//! Netlink filters and qdiscs do not: they outlive a killed process. So in
//! classic mode every ktrace object is recognisable and its ownership is
//! recorded where a later ktrace (or `ktrace doctor`) finds it:
//!
//! - **Filters** are `bpf` filters at priority [`PRIO`] (0x4b54, "KT") on
//!   clsact's ingress/egress, named `underlay_ingress` / `underlay_egress`
//!   (the program name the kernel keeps in `TCA_BPF_NAME`), with the owner's
//!   id (its pid) as handle. The owner holds an `flock` on
//!   `/run/ktrace/tc/owner-<handle>.lock` for its whole life; the kernel
//!   releases it when the process dies, however it dies. A ktrace filter whose
//!   owner lock is free (or missing) is stale and is removed. Nothing else is.
//! - **The clsact qdisc** is created only when absent, after writing
//!   `/run/ktrace/tc/clsact-<netns>-<ifindex>` = `intent`; once the kernel
//!   acknowledged the creation the file is replaced by `created`. A qdisc is
//!   deleted only when its file says `created` and no filter at all (ktrace's
//!   or anyone's) is left on it; the file is removed *before* the qdisc, so a
//!   crash at any point leaks at worst an empty qdisc and never makes a later
//!   ktrace delete one it did not create. A crash between `intent` and
//!   `created` leaves ownership unknown: that qdisc is never deleted, and
//!   `ktrace doctor` reports it.
//!
//! All of this runs under an exclusive `flock` on `/run/ktrace/tc/lock`, so
//! concurrent ktrace instances (one per interface, or several on one) see
//! each other's state consistently.
//!
//! Both modes run the same program: it returns -1, which is `TCX_NEXT` for
//! TCX and `TC_ACT_UNSPEC` for a direct-action `cls_bpf` filter; both mean
//! "not my business, run the next program/filter, then pass", so ktrace never
//! short-circuits filters that other tools attached after it.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Write as _},
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, socket,
};

/// Priority of ktrace's classic tc filters ("KT"); a dedicated value so they
/// are recognisable and never share a priority slot with another tool's filters.
pub const PRIO: u16 = 0x4b54;
/// clsact's ingress hook as a filter parent (`ffff:fff2`).
pub const PARENT_INGRESS: u32 = 0xFFFF_FFF2;
/// clsact's egress hook as a filter parent (`ffff:fff3`).
pub const PARENT_EGRESS: u32 = 0xFFFF_FFF3;
/// The two hooks with the program ktrace attaches to each.
pub const HOOKS: [(u32, &str); 2] = [(PARENT_EGRESS, "underlay_egress"), (PARENT_INGRESS, "underlay_ingress")];
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const CLSACT_HANDLE: u32 = 0xFFFF_0000;

/// Where ownership state lives (tmpfs: a reboot clears it together with the qdiscs).
pub const STATE_DIR: &str = "/run/ktrace/tc";

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

// ---------------------------------------------------------------- netlink --

/// One tc filter as the kernel dumps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// `PARENT_INGRESS` / `PARENT_EGRESS` (or another parent for non-clsact qdiscs).
    pub parent: u32,
    /// Priority (`pref`).
    pub prio: u16,
    /// `tcm_info`'s protocol half, as the kernel gives it (network byte order).
    pub protocol: u16,
    /// Filter handle.
    pub handle: u32,
    /// Classifier kind (`bpf`, `u32`, `matchall`, …).
    pub kind: String,
    /// `TCA_BPF_NAME` for bpf filters.
    pub bpf_name: Option<String>,
    /// `TCA_BPF_ID` (program id) for bpf filters.
    pub bpf_id: Option<u32>,
}

impl Filter {
    /// Whether this filter is one of ktrace's underlay filters (by hook, kind,
    /// dedicated priority and program name); its owner is `handle`.
    #[must_use]
    pub fn is_ktrace(&self) -> bool {
        self.kind == "bpf"
            && self.prio == PRIO
            && self.handle != 0
            && HOOKS.iter().any(|(p, n)| *p == self.parent && self.bpf_name.as_deref() == Some(*n))
    }
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// `struct tcmsg`.
fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&[0u8; 4]); // family AF_UNSPEC + padding
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&info.to_ne_bytes());
    b
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// Iterates `(type, payload)` over netlink attributes; stops at the first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((ty, data))
    })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses one `RTM_NEWTFILTER` payload (tcmsg + attributes). None for the
/// per-priority chain heads the kernel dumps without a handle.
#[must_use]
pub fn parse_filter(payload: &[u8]) -> Option<Filter> {
    let handle = u32_at(payload, 8)?;
    let parent = u32_at(payload, 12)?;
    let info = u32_at(payload, 16)?;
    let mut f = Filter {
        parent,
        prio: (info >> 16) as u16,
        protocol: (info & 0xffff) as u16,
        handle,
        kind: String::new(),
        bpf_name: None,
        bpf_id: None,
    };
    for (ty, data) in attrs(payload.get(20..)?) {
        match ty {
            TCA_KIND => f.kind = cstr(data),
            TCA_OPTIONS => {
                for (t, d) in attrs(data) {
                    match t {
                        TCA_BPF_NAME => f.bpf_name = Some(cstr(d)),
                        TCA_BPF_ID => f.bpf_id = u32_at(d, 0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (handle != 0).then_some(f)
}

/// Parses one `RTM_NEWQDISC` payload: `(ifindex, is clsact)`.
fn parse_qdisc(payload: &[u8]) -> Option<(u32, bool)> {
    let ifindex = u32_at(payload, 4)?;
    let parent = u32_at(payload, 12)?;
    let kind = attrs(payload.get(20..)?).find(|(t, _)| *t == TCA_KIND).map(|(_, d)| cstr(d)).unwrap_or_default();
    Some((ifindex, parent == TC_H_CLSACT && kind == "clsact"))
}

/// A `NETLINK_ROUTE` socket.
struct Nl {
    fd: OwnedFd,
    seq: u32,
}

impl Nl {
    fn open() -> io::Result<Self> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
        let one: libc::c_int = 1;
        // Error messages from the kernel ("Parent Qdisc doesn't exists"), without the echoed request.
        // libc: nix has no socket option for these two.
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            // SAFETY: a valid fd and an int option value that outlives the call.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as u32,
                );
            }
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Self { fd, seq: 1 })
    }

    /// Sends one request; returns the payloads of the answers (dumps) once
    /// the kernel said DONE or acknowledged.
    fn request(&mut self, ty: u16, flags: u16, body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&u32::try_from(16 + body.len()).unwrap_or(u32::MAX).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // Bounded: a dump of one interface's filters is a few messages.
        for _ in 0..100_000 {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut b = &buf[..n];
            while b.len() >= 16 {
                let len = u32_at(b, 0).unwrap_or(0) as usize;
                if len < 16 || len > b.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message"));
                }
                let mty = u16_at(b, 4).unwrap_or(0);
                let mflags = u16_at(b, 6).unwrap_or(0);
                let mseq = u32_at(b, 8).unwrap_or(0);
                let payload = &b[16..len];
                b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
                if mseq != seq {
                    continue;
                }
                match mty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = u32_at(payload, 0).map_or(0, |c| c as i32);
                        if code == 0 {
                            return Ok(out);
                        }
                        let mut e = io::Error::from_raw_os_error(-code);
                        if mflags & NLM_F_ACK_TLVS != 0 {
                            // error code + the request's header (capped), then TLVs.
                            if let Some((_, m)) =
                                attrs(payload.get(20..).unwrap_or(&[])).find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
                            {
                                e = io::Error::new(e.kind(), format!("{e}: {}", cstr(m)));
                            }
                        }
                        return Err(e);
                    }
                    _ => out.push(payload.to_vec()),
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "netlink: no end of dump"))
    }

    /// Interfaces (in this network namespace) that have a clsact qdisc.
    fn clsact_ifindexes(&mut self) -> io::Result<Vec<u32>> {
        let msgs = self.request(RTM_GETQDISC, NLM_F_DUMP, &tcmsg(0, 0, 0, 0))?;
        Ok(msgs.iter().filter_map(|m| parse_qdisc(m)).filter(|(_, c)| *c).map(|(i, _)| i).collect())
    }

    fn has_clsact(&mut self, ifindex: u32) -> io::Result<bool> {
        Ok(self.clsact_ifindexes()?.contains(&ifindex))
    }

    fn add_clsact(&mut self, ifindex: u32) -> io::Result<()> {
        let mut b = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
        push_attr(&mut b, TCA_KIND, b"clsact\0");
        self.request(RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &b).map(drop)
    }

    fn del_clsact(&mut self, ifindex: u32) -> io::Result<()> {
        let mut b = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
        push_attr(&mut b, TCA_KIND, b"clsact\0");
        self.request(RTM_DELQDISC, NLM_F_ACK, &b).map(drop)
    }

    /// Every filter on clsact's ingress and egress of `ifindex`.
    fn filters(&mut self, ifindex: u32) -> io::Result<Vec<Filter>> {
        let mut out = Vec::new();
        for parent in [PARENT_INGRESS, PARENT_EGRESS] {
            let msgs = self.request(RTM_GETTFILTER, NLM_F_DUMP, &tcmsg(ifindex, 0, parent, 0))?;
            out.extend(msgs.iter().filter_map(|m| parse_filter(m)));
        }
        Ok(out)
    }

    fn del_filter(&mut self, ifindex: u32, f: &Filter) -> io::Result<()> {
        let mut b = tcmsg(ifindex, f.handle, f.parent, (u32::from(f.prio) << 16) | u32::from(f.protocol));
        push_attr(&mut b, TCA_KIND, b"bpf\0");
        match self.request(RTM_DELTFILTER, NLM_F_ACK, &b) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map(drop),
        }
    }
}

// ------------------------------------------------------------ ownership --

/// What `/run/ktrace/tc/clsact-<netns>-<ifindex>` says about a clsact qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QdiscState {
    /// A ktrace was about to create it (crashed before the kernel's answer was recorded).
    Intent,
    /// ktrace created it.
    Created,
}

impl QdiscState {
    /// Parses the file's first word; anything else is unknown (treated as not ktrace's).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_whitespace().next()? {
            "intent" => Some(Self::Intent),
            "created" => Some(Self::Created),
            _ => None,
        }
    }
}

/// What to do with a clsact qdisc once ktrace's filters are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QdiscAction {
    /// Not ktrace's (or still in use): leave it and its state file alone.
    Keep,
    /// ktrace created it and nothing uses it: remove the state file, then the qdisc.
    Delete,
    /// The qdisc is gone: the state file is stale.
    ForgetState,
    /// A ktrace crashed while creating it: ownership unknown, never deleted; reported.
    Ambiguous,
}

/// The one rule deciding whether a clsact qdisc may be deleted.
#[must_use]
pub fn qdisc_action(state: Option<QdiscState>, exists: bool, filters_left: usize) -> QdiscAction {
    match (state, exists) {
        (Some(_), false) => QdiscAction::ForgetState,
        (Some(QdiscState::Intent), true) => QdiscAction::Ambiguous,
        (Some(QdiscState::Created), true) if filters_left == 0 => QdiscAction::Delete,
        (None, _) | (Some(QdiscState::Created), true) => QdiscAction::Keep,
    }
}

/// A network namespace id for state file names: the netns cookie (never
/// reused while the machine is up), else the namespace inode.
fn netns_id() -> String {
    if let Ok(fd) = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None) {
        let mut cookie: u64 = 0;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SO_NETNS_COOKIE (kernel >= 5.14). libc: nix has no socket option for it.
        // SAFETY: a valid fd; `cookie` and `len` outlive the call and match.
        if unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, 71, (&raw mut cookie).cast(), &raw mut len) }
            == 0
        {
            return format!("c{cookie}");
        }
    }
    fs::metadata("/proc/self/ns/net")
        .map_or_else(|_| "unknown".into(), |m| format!("i{}", std::os::unix::fs::MetadataExt::ino(&m)))
}

fn state_dir() -> io::Result<PathBuf> {
    let d = PathBuf::from(STATE_DIR);
    fs::create_dir_all(&d)?;
    Ok(d)
}

/// The host-wide lock serialising ktrace's tc changes.
struct GlobalLock(#[expect(dead_code, reason = "held for its flock")] File);

impl GlobalLock {
    fn take() -> io::Result<Self> {
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(state_dir()?.join("lock"))?;
        f.lock()?;
        Ok(Self(f))
    }
}

fn owner_path(handle: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("owner-{handle}.lock"))
}

/// Whether the ktrace that owns filters with this handle is still running:
/// its owner lock is held. Caller holds the global lock.
fn owner_alive(handle: u32) -> bool {
    let Ok(f) = File::open(owner_path(handle)) else { return false };
    matches!(f.try_lock(), Err(TryLockError::WouldBlock))
}

fn qdisc_state_path(netns: &str, ifindex: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("clsact-{netns}-{ifindex}"))
}

fn write_durable(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

fn read_state(path: &Path) -> Option<QdiscState> {
    fs::read_to_string(path).ok().and_then(|t| QdiscState::parse(&t))
}

fn ifname(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex)
        .map_or_else(|_| format!("ifindex {ifindex}"), |n| n.to_string_lossy().into_owned())
}

/// Applies [`qdisc_action`] to one interface. Caller holds the global lock.
fn settle_qdisc(nl: &mut Nl, netns: &str, ifindex: u32, report: &mut Cleanup) -> io::Result<()> {
    let path = qdisc_state_path(netns, ifindex);
    let state = read_state(&path);
    if state.is_none() {
        return Ok(());
    }
    let exists = nl.has_clsact(ifindex)?;
    let left = if exists { nl.filters(ifindex)?.len() } else { 0 };
    match qdisc_action(state, exists, left) {
        QdiscAction::Keep => {}
        QdiscAction::ForgetState => {
            let _ = fs::remove_file(&path);
        }
        QdiscAction::Delete => {
            // State first: a crash here leaks an empty qdisc, never the reverse.
            fs::remove_file(&path)?;
            File::open(STATE_DIR)?.sync_all()?;
            match nl.del_clsact(ifindex) {
                Err(e) if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidInput) => {
                    return Err(e);
                }
                _ => report.removed_qdiscs.push(ifname(ifindex)),
            }
        }
        QdiscAction::Ambiguous => report.ambiguous_qdiscs.push(ifname(ifindex)),
    }
    Ok(())
}

/// What a stale-state sweep found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Cleanup {
    /// Stale ktrace filters removed, as `DEV ingress|egress handle N`.
    pub removed_filters: Vec<String>,
    /// clsact qdiscs ktrace had created and that were left empty, removed.
    pub removed_qdiscs: Vec<String>,
    /// clsact qdiscs a crashed ktrace may or may not have created: left in place.
    pub ambiguous_qdiscs: Vec<String>,
    /// ktrace filters of running ktrace processes (left alone).
    pub live_filters: Vec<String>,
}

fn describe(ifindex: u32, f: &Filter) -> String {
    let dir = if f.parent == PARENT_INGRESS { "ingress" } else { "egress" };
    format!("{} {dir} handle {}", ifname(ifindex), f.handle)
}

/// Removes every stale ktrace filter in this network namespace (owner dead),
/// then clsact qdiscs ktrace created that are now empty. Caller holds the global lock.
fn sweep(nl: &mut Nl) -> io::Result<Cleanup> {
    let mut report = Cleanup::default();
    let netns = netns_id();
    for ifindex in nl.clsact_ifindexes()? {
        for f in nl.filters(ifindex)?.into_iter().filter(Filter::is_ktrace) {
            if owner_alive(f.handle) {
                report.live_filters.push(describe(ifindex, &f));
                continue;
            }
            nl.del_filter(ifindex, &f)?;
            report.removed_filters.push(describe(ifindex, &f));
        }
    }
    // Owner lock files nobody holds are leftovers of killed instances.
    let dir = fs::read_dir(STATE_DIR).into_iter().flatten().flatten();
    let mut states = Vec::new();
    for e in dir {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(h) = name.strip_prefix("owner-").and_then(|s| s.strip_suffix(".lock")) {
            if let Ok(h) = h.parse::<u32>()
                && !owner_alive(h)
            {
                let _ = fs::remove_file(e.path());
            }
        } else if let Some(i) = name.strip_prefix(&format!("clsact-{netns}-"))
            && let Ok(i) = i.parse::<u32>()
        {
            states.push(i);
        }
    }
    for ifindex in states {
        settle_qdisc(nl, &netns, ifindex, &mut report)?;
    }
    Ok(report)
}

/// Finds and removes ktrace's stale tc state in this network namespace
/// (what a killed (SIGKILL) ktrace in clsact mode left behind). `ktrace doctor` and
/// every underlay attach run it.
pub fn cleanup_stale() -> io::Result<Cleanup> {
    let _lock = GlobalLock::take()?;
    sweep(&mut Nl::open()?)
}

// --------------------------------------------------------------- attach --

/// How the underlay programs are attached to one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcMode {
    /// TCX links (kernel >= 6.6): gone when ktrace exits, however it exits.
    Tcx,
    /// Classic netlink filters on a clsact qdisc (removed by ktrace on exit, or
    /// by the next ktrace / `ktrace doctor` after a crash).
    Clsact,
}

/// Whether TCX should be tried (`KTRACE_NO_TCX=1` forces the classic path).
#[must_use]
pub fn tcx_wanted() -> bool {
    std::env::var_os("KTRACE_NO_TCX").is_none_or(|v| v.is_empty() || v == "0")
}

/// Classic tc filters of this process on one interface; dropping it removes
/// them and, if ktrace created the clsact qdisc and nothing else uses it, the qdisc.
pub struct ClsactGuard {
    ifindex: u32,
    handle: u32,
    owner: Option<File>,
    attached: Vec<Filter>,
}

impl ClsactGuard {
    /// Prepares `ifindex` for classic filters: sweeps stale state, takes the
    /// owner lock, creates clsact if absent (recording that ktrace did).
    /// Returns the guard and the sweep's report.
    pub fn prepare(ifindex: u32) -> io::Result<(Self, Cleanup)> {
        let _lock = GlobalLock::take()?;
        let mut nl = Nl::open()?;
        let report = sweep(&mut nl)?;
        let handle = std::process::id();
        let owner = OpenOptions::new().create(true).truncate(false).write(true).open(owner_path(handle))?;
        owner.try_lock().map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(
                e.kind(),
                format!("owner lock {}: {e} (another ktrace with id {handle}?)", owner_path(handle).display()),
            )
        })?;
        let guard = Self { ifindex, handle, owner: Some(owner), attached: Vec::new() };
        if !nl.has_clsact(ifindex)? {
            let path = qdisc_state_path(&netns_id(), ifindex);
            write_durable(&path, &format!("intent {}\n", ifname(ifindex)))?;
            match nl.add_clsact(ifindex) {
                Ok(()) => write_durable(&path, &format!("created {}\n", ifname(ifindex)))?,
                // Someone created it in between: not ours.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::remove_file(&path)?,
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    return Err(io::Error::new(e.kind(), format!("creating clsact qdisc: {e}")));
                }
            }
        }
        Ok((guard, report))
    }

    /// The handle (owner id) ktrace's filters get.
    #[must_use]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Records a filter attached through aya so [`Drop`] removes it.
    pub fn attached(&mut self, parent: u32, name: &str) {
        self.attached.push(Filter {
            parent,
            prio: PRIO,
            protocol: (libc::ETH_P_ALL as u16).to_be(),
            handle: self.handle,
            kind: "bpf".into(),
            bpf_name: Some(name.into()),
            bpf_id: None,
        });
    }

    fn teardown(&mut self) -> io::Result<()> {
        let _lock = GlobalLock::take()?;
        let mut nl = Nl::open()?;
        // Every filter with our handle at our priority, whether or not aya
        // reported it attached (a failure half-way still leaves nothing).
        let mine: Vec<Filter> = nl
            .filters(self.ifindex)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.is_ktrace() && f.handle == self.handle)
            .collect();
        for f in mine.iter().chain(self.attached.iter()) {
            nl.del_filter(self.ifindex, f)?;
        }
        self.attached.clear();
        let mut report = Cleanup::default();
        settle_qdisc(&mut nl, &netns_id(), self.ifindex, &mut report)?;
        if let Some(owner) = self.owner.take() {
            let _ = fs::remove_file(owner_path(self.handle));
            drop(owner);
        }
        Ok(())
    }
}

impl Drop for ClsactGuard {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            log::warn!(
                "removing ktrace's tc filters from {}: {e} (the next ktrace or `ktrace doctor` removes them)",
                ifname(self.ifindex)
            );
        }
    }
}

/// `ktrace doctor`'s classic-tc check, run on `dev` inside a throw-away
/// network namespace (the caller's thread unshared it): creates clsact,
/// attaches both loaded underlay programs as ktrace's filters, checks the
/// kernel lists them as ktrace's, removes them.
pub fn probe_classic(ebpf: &mut aya::Ebpf, dev: &str) -> Result<(), String> {
    use aya::programs::{
        SchedClassifier, TcAttachType,
        tc::{NlOptions, TcAttachOptions, TcHandle},
    };
    let ifindex = nix::net::if_::if_nametoindex(dev).map_err(|e| format!("{dev}: {e}"))?;
    let mut nl = Nl::open().map_err(|e| format!("netlink: {e}"))?;
    match nl.add_clsact(ifindex) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(format!("creating clsact: {e}")),
        _ => {}
    }
    let handle = std::process::id();
    for ((name, ty), (parent, _)) in
        [("underlay_egress", TcAttachType::Egress), ("underlay_ingress", TcAttachType::Ingress)].into_iter().zip(HOOKS)
    {
        let p: &mut SchedClassifier =
            ebpf.program_mut(name).and_then(|p| p.try_into().ok()).ok_or_else(|| format!("{name} missing"))?;
        let opts = NlOptions { priority: PRIO, handle: TcHandle::from(handle), classid: None };
        let id = p
            .attach_with_options(dev, ty, TcAttachOptions::Netlink(opts))
            .map_err(|e| format!("{name}: {}", super::doctor::err_chain(&e)))?;
        let seen = nl.filters(ifindex).map_err(|e| format!("dumping filters: {e}"))?;
        let found = seen.iter().any(|f| f.is_ktrace() && f.handle == handle && f.parent == parent);
        p.detach(id).map_err(|e| format!("{name}: detach: {}", super::doctor::err_chain(&e)))?;
        if !found {
            return Err(format!("{name} attached but not recognisable as ktrace's in the dump: {seen:?}"));
        }
    }
    let _ = nl.del_clsact(ifindex);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_msg(handle: u32, parent: u32, prio: u16, kind: &str, name: Option<&str>) -> Vec<u8> {
        let mut b = tcmsg(7, handle, parent, (u32::from(prio) << 16) | u32::from(0x0003u16.to_be()));
        let mut k = kind.as_bytes().to_vec();
        k.push(0);
        push_attr(&mut b, TCA_KIND, &k);
        let mut opts = Vec::new();
        if let Some(n) = name {
            let mut n = n.as_bytes().to_vec();
            n.push(0);
            push_attr(&mut opts, TCA_BPF_NAME, &n);
        }
        push_attr(&mut opts, TCA_BPF_ID, &42u32.to_ne_bytes());
        push_attr(&mut b, TCA_OPTIONS | 0x8000, &opts);
        b
    }

    #[test]
    fn parses_a_bpf_filter_and_recognises_ktrace_s() {
        let f = parse_filter(&filter_msg(1234, PARENT_EGRESS, PRIO, "bpf", Some("underlay_egress"))).unwrap();
        assert_eq!(f.handle, 1234);
        assert_eq!(f.prio, PRIO);
        assert_eq!(f.bpf_name.as_deref(), Some("underlay_egress"));
        assert_eq!(f.bpf_id, Some(42));
        assert_eq!(f.protocol, 0x0003u16.to_be());
        assert!(f.is_ktrace());
    }

    #[test]
    fn foreign_filters_are_never_ktrace_s() {
        for (parent, prio, kind, name) in [
            (PARENT_EGRESS, 1, "bpf", Some("underlay_egress")), // another priority
            (PARENT_EGRESS, PRIO, "u32", None),                 // another kind
            (PARENT_EGRESS, PRIO, "bpf", Some("cil_from_netdev")),
            (PARENT_INGRESS, PRIO, "bpf", Some("underlay_egress")), // wrong hook for the name
            (PARENT_EGRESS, PRIO, "bpf", None),
        ] {
            let f = parse_filter(&filter_msg(99, parent, prio, kind, name)).unwrap();
            assert!(!f.is_ktrace(), "{f:?}");
        }
    }

    #[test]
    fn chain_heads_without_handle_are_skipped_and_garbage_is_not_a_panic() {
        assert!(parse_filter(&filter_msg(0, PARENT_EGRESS, PRIO, "bpf", None)).is_none());
        assert!(parse_filter(&[1, 2, 3]).is_none());
        let mut m = filter_msg(5, PARENT_EGRESS, PRIO, "bpf", Some("underlay_egress"));
        m.truncate(30);
        let _ = parse_filter(&m);
        m.extend_from_slice(&[0xff; 8]);
        let _ = parse_filter(&m);
    }

    #[test]
    fn qdisc_is_deleted_only_when_ktrace_created_it_and_it_is_empty() {
        use QdiscAction::*;
        use QdiscState::*;
        assert_eq!(qdisc_action(None, true, 0), Keep);
        assert_eq!(qdisc_action(None, false, 0), Keep);
        assert_eq!(qdisc_action(Some(Created), true, 0), Delete);
        assert_eq!(qdisc_action(Some(Created), true, 1), Keep);
        assert_eq!(qdisc_action(Some(Created), false, 0), ForgetState);
        assert_eq!(qdisc_action(Some(Intent), true, 0), Ambiguous);
        assert_eq!(qdisc_action(Some(Intent), false, 0), ForgetState);
    }

    #[test]
    fn state_file_parsing_is_strict() {
        assert_eq!(QdiscState::parse("created veth0\n"), Some(QdiscState::Created));
        assert_eq!(QdiscState::parse("intent veth0\n"), Some(QdiscState::Intent));
        assert_eq!(QdiscState::parse(""), None);
        assert_eq!(QdiscState::parse("createdX"), None);
    }
}
