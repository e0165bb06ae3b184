//! What this machine offers for containment and enforcement, and why not
//! where it does not: the data of `pod doctor` and the input of the level
//! choice ([`crate::level`]).
//!
//! Detection reads the mount table, `/proc/self/cgroup`, a few sysctls and
//! asks the kernel for Landlock's features; it starts no process and
//! changes nothing. Every "no" carries its reason, in words a user can act
//! on.
//!
//! `POD_SANDBOX_DISABLE=landlock,userns,mountns,pidns,cgroup,pids,memory`
//! (any subset) makes detection report those features missing, so that
//! refusal paths and the fallbacks (the supervisor instead of a cgroup) can
//! be exercised on a machine that has everything. It can only take features
//! away, never add one; `pod doctor` shows what it took.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::SandboxError;

/// The environment variable that simulates missing features.
pub const DISABLE_ENV: &str = "POD_SANDBOX_DISABLE";

/// A feature the sandbox may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Landlock,
    Userns,
    Mountns,
    Pidns,
    Cgroup,
    Pids,
    Memory,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::Landlock,
        Feature::Userns,
        Feature::Mountns,
        Feature::Pidns,
        Feature::Cgroup,
        Feature::Pids,
        Feature::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::Landlock => "landlock",
            Feature::Userns => "userns",
            Feature::Mountns => "mountns",
            Feature::Pidns => "pidns",
            Feature::Cgroup => "cgroup",
            Feature::Pids => "pids",
            Feature::Memory => "memory",
        }
    }

    fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a feature is not available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub feature: Feature,
    pub reason: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.feature, self.reason)
    }
}

pub type Avail<T> = Result<T, Missing>;

/// Landlock as this kernel offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Landlock {
    /// The highest ABI whose features the kernel accepted (probed up to 7).
    pub abi: u8,
}

impl Landlock {
    /// Renaming and linking across directories can be allowed inside the
    /// write scope (and refused across its boundary): ABI 2.
    pub fn refer(self) -> bool {
        self.abi >= 2
    }
    /// truncate(2) is a controlled right: ABI 3.
    pub fn truncate(self) -> bool {
        self.abi >= 3
    }
    /// Signals to processes outside the sandbox are refused: ABI 6.
    pub fn signal_scope(self) -> bool {
        self.abi >= 6
    }
}

/// Who lets us create cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupGrant {
    /// We are root and the hierarchy is writable.
    Root,
    /// Our own cgroup is delegated to our uid (a systemd scope or service
    /// with `Delegate=yes`).
    Delegated,
}

/// The cgroup v2 hierarchy and where per-Pod cgroups go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupV2 {
    /// Mount point of the cgroup2 filesystem (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on hybrid hosts).
    pub mount: PathBuf,
    /// Directory under which this process creates its Pods' cgroups.
    pub parent: PathBuf,
    pub grant: CgroupGrant,
    /// Controllers the parent can hand to its children.
    pub controllers: Vec<String>,
}

/// Where a limit is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Controller {
    /// The controller of the v2 hierarchy (enabled in the Pod cgroups).
    V2,
    /// A v1 hierarchy (hybrid hosts); Pod cgroups go under `parent`.
    V1 { mount: PathBuf, parent: PathBuf },
}

/// Everything detection found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Support {
    /// Effective uid 0.
    pub root: bool,
    pub landlock: Avail<Landlock>,
    pub userns: Avail<()>,
    pub mountns: Avail<()>,
    pub pidns: Avail<()>,
    pub cgroup: Avail<CgroupV2>,
    pub pids: Avail<Controller>,
    pub memory: Avail<Controller>,
    /// Features taken away by `POD_SANDBOX_DISABLE`.
    pub disabled: Vec<Feature>,
}

impl Support {
    /// Detects this machine, honouring `POD_SANDBOX_DISABLE`. An unknown
    /// name in it is refused (a typo must not silently test nothing).
    pub fn detect() -> Result<Support, SandboxError> {
        let disable = std::env::var(DISABLE_ENV).ok();
        let disabled = parse_disable(disable.as_deref())?;
        let mut support = detect_machine();
        support.apply_disabled(&disabled);
        Ok(support)
    }

    /// Marks `features` missing ("disabled by POD_SANDBOX_DISABLE"), and
    /// what depends on them with them.
    pub fn apply_disabled(&mut self, features: &[Feature]) {
        let off = |f: Feature| Missing { feature: f, reason: format!("disabled by {DISABLE_ENV}") };
        for &f in features {
            match f {
                Feature::Landlock => self.landlock = Err(off(f)),
                Feature::Userns => self.userns = Err(off(f)),
                Feature::Mountns => self.mountns = Err(off(f)),
                Feature::Pidns => self.pidns = Err(off(f)),
                Feature::Cgroup => self.cgroup = Err(off(f)),
                Feature::Pids => self.pids = Err(off(f)),
                Feature::Memory => self.memory = Err(off(f)),
            }
            if !self.disabled.contains(&f) {
                self.disabled.push(f);
            }
        }
        // Without root, namespaces other than the user namespace need one.
        if !self.root {
            if let Err(m) = &self.userns {
                let why = format!("needs a user namespace when not root ({})", m.reason);
                if self.mountns.is_ok() {
                    self.mountns = Err(Missing { feature: Feature::Mountns, reason: why.clone() });
                }
                if self.pidns.is_ok() {
                    self.pidns = Err(Missing { feature: Feature::Pidns, reason: why });
                }
            }
        }
        // A v2 limit lives in the per-Pod cgroup.
        if let Err(m) = &self.cgroup {
            for (slot, feature) in [(&mut self.pids, Feature::Pids), (&mut self.memory, Feature::Memory)] {
                if matches!(slot, Ok(Controller::V2)) {
                    *slot =
                        Err(Missing { feature, reason: format!("the v2 controller needs a cgroup ({})", m.reason) });
                }
            }
        }
        self.disabled.sort();
    }

    /// One line per feature, for `pod doctor`: `landlock: yes (ABI 7)`,
    /// `cgroup: no (...)`.
    pub fn report_lines(&self) -> Vec<String> {
        fn line<T>(name: &str, a: &Avail<T>, yes: impl FnOnce(&T) -> String) -> String {
            match a {
                Ok(v) => format!("{name}: yes ({})", yes(v)),
                Err(m) => format!("{name}: no ({})", m.reason),
            }
        }
        let controller = |c: &Controller| match c {
            Controller::V2 => "cgroup v2 controller".to_string(),
            Controller::V1 { parent, .. } => format!("v1 hierarchy, under {}", parent.display()),
        };
        let mut lines = vec![
            format!("user: {}", if self.root { "root" } else { "not root" }),
            line("landlock", &self.landlock, |l| {
                let mut s = format!("ABI {}", l.abi);
                if !l.refer() {
                    s.push_str("; no cross-directory rename or link, even inside the write scope (needs ABI 2)");
                }
                if !l.truncate() {
                    s.push_str("; truncate(2) is not controlled (needs ABI 3)");
                }
                if !l.signal_scope() {
                    s.push_str("; signals out of the sandbox not refused (needs ABI 6)");
                }
                s
            }),
            line("userns", &self.userns, |_| "user namespaces".into()),
            line("mountns", &self.mountns, |_| "private mount namespaces".into()),
            line("pidns", &self.pidns, |_| "PID namespaces".into()),
            line("cgroup", &self.cgroup, |c| {
                let grant = match c.grant {
                    CgroupGrant::Root => "as root",
                    CgroupGrant::Delegated => "delegated to this user",
                };
                format!("cgroup v2 at {}, Pod cgroups under {} ({grant})", c.mount.display(), c.parent.display())
            }),
            line("pids", &self.pids, controller),
            line("memory", &self.memory, controller),
        ];
        if !self.disabled.is_empty() {
            let names: Vec<&str> = self.disabled.iter().map(|f| f.name()).collect();
            lines.push(format!("simulated missing by {DISABLE_ENV}: {}", names.join(",")));
        }
        lines
    }
}

/// Parses `POD_SANDBOX_DISABLE`.
pub fn parse_disable(value: Option<&str>) -> Result<Vec<Feature>, SandboxError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let feature = Feature::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
            SandboxError::BadRequest(format!("{DISABLE_ENV} names {name:?}; known features: {}", known.join(",")))
        })?;
        if !out.contains(&feature) {
            out.push(feature);
        }
    }
    Ok(out)
}

fn detect_machine() -> Support {
    let root = rustix::process::geteuid().is_root();
    let userns = detect_userns(root);
    let ns = |feature: Feature, file: &str| -> Avail<()> {
        if !Path::new("/proc/self/ns").join(file).exists() {
            return Err(Missing { feature, reason: format!("the kernel has no {file} namespaces") });
        }
        if root {
            return Ok(());
        }
        userns
            .clone()
            .map_err(|m| Missing { feature, reason: format!("needs a user namespace when not root ({})", m.reason) })
    };
    let mountns = ns(Feature::Mountns, "mnt");
    let pidns = ns(Feature::Pidns, "pid");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = parse_mountinfo(&mountinfo);
    let memberships = parse_proc_cgroup(&own);
    let cgroup = detect_cgroup_v2(root, &mounts, &memberships);
    let pids = detect_controller(root, "pids", &cgroup, &mounts, &memberships);
    let memory = detect_controller(root, "memory", &cgroup, &mounts, &memberships);
    Support { root, landlock: detect_landlock(), userns, mountns, pidns, cgroup, pids, memory, disabled: Vec::new() }
}

/// The highest Landlock ABI whose features the kernel accepts, asked
/// feature by feature with hard requirements (nothing is enforced).
fn detect_landlock() -> Avail<Landlock> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
    };
    let hard = || Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    let fs = |abi: ABI| hard().handle_access(AccessFs::from_all(abi)).is_ok();
    if !fs(ABI::V1) {
        return Err(Missing {
            feature: Feature::Landlock,
            reason: "the kernel does not offer Landlock (not built in, or not in the boot-time `lsm=` list)".into(),
        });
    }
    let checks: [(u8, bool); 6] = [
        (2, fs(ABI::V2)),
        (3, fs(ABI::V3)),
        (4, hard().handle_access(AccessNet::from_all(ABI::V4)).is_ok()),
        (5, fs(ABI::V5)),
        (6, hard().scope(Scope::Signal).is_ok()),
        (
            7,
            hard()
                .handle_access(AccessFs::Execute)
                .and_then(|r| r.create())
                .and_then(|c| c.set_compatibility(CompatLevel::HardRequirement).log_same_exec(false))
                .is_ok(),
        ),
    ];
    let abi = checks.iter().take_while(|(_, ok)| *ok).last().map_or(1, |(abi, _)| *abi);
    Ok(Landlock { abi })
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn detect_userns(root: bool) -> Avail<()> {
    let missing = |reason: String| Err(Missing { feature: Feature::Userns, reason });
    if !Path::new("/proc/self/ns/user").exists() {
        return missing("the kernel has no user namespaces (CONFIG_USER_NS)".into());
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return missing("sysctl user.max_user_namespaces is 0".into());
    }
    if root {
        return Ok(());
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return missing("sysctl kernel.unprivileged_userns_clone is 0 (unprivileged user namespaces are off)".into());
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return missing(
            "sysctl kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor confines unprivileged user namespaces)"
                .into(),
        );
    }
    Ok(())
}

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The root of the mount within its filesystem (`/` for a whole one).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub super_options: Vec<String>,
}

/// Parses mountinfo (`man 5 proc`): `id parent maj:min root mountpoint
/// options [optional...] - fstype source superoptions`. Octal escapes
/// (`\040` for a space) are decoded. Malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                fs_type: (*right.first()?).to_string(),
                super_options: right.get(2).map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_default(),
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The v2 path of the membership list (`0::/path`).
pub(crate) fn v2_path(memberships: &[Membership]) -> Option<&str> {
    memberships.iter().find(|m| m.controllers.is_empty()).map(|m| m.path.as_str())
}

/// `mount` joined with a cgroup path (`/a/b`), never escaping it.
pub(crate) fn under(mount: &Path, cgroup_path: &str) -> PathBuf {
    let mut p = mount.to_path_buf();
    for part in cgroup_path.split('/').filter(|s| !s.is_empty() && *s != "..") {
        p.push(part);
    }
    p
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

fn owned_by_us(path: &Path) -> bool {
    rustix::fs::stat(path).is_ok_and(|st| st.st_uid == rustix::process::geteuid().as_raw())
}

/// True when `cgroup_path` lies inside a workload cgroup of some Pod: then
/// new Pod cgroups nest there, so that what a workload starts stays its.
fn inside_workload(cgroup_path: &str) -> bool {
    cgroup_path.split('/').any(|part| part.starts_with(crate::cgroup::HOME_PREFIX))
}

fn detect_cgroup_v2(root: bool, mounts: &[MountEntry], memberships: &[Membership]) -> Avail<CgroupV2> {
    let missing = |reason: String| Err(Missing { feature: Feature::Cgroup, reason });
    let Some(mount) = mounts.iter().find(|m| m.fs_type == "cgroup2") else {
        return missing("no cgroup2 filesystem is mounted (see /proc/self/mountinfo)".into());
    };
    let Some(own) = v2_path(memberships) else {
        return missing("this process has no cgroup v2 membership in /proc/self/cgroup".into());
    };
    // A cgroup namespace or a bind of a sub-tree: the mount shows `root`.
    let own_rel = own.strip_prefix(mount.root.trim_end_matches('/')).unwrap_or(own);
    let own_dir = under(&mount.mount_point, own_rel);
    let (parent, grant) = if root {
        let parent = if inside_workload(own_rel) { own_dir.clone() } else { mount.mount_point.clone() };
        if !writable(&parent) {
            return missing(format!("{} is not writable, even as root (mounted read-only?)", parent.display()));
        }
        (parent, CgroupGrant::Root)
    } else {
        if !(owned_by_us(&own_dir) && owned_by_us(&own_dir.join("cgroup.procs")) && writable(&own_dir)) {
            return missing(format!(
                "not root, and this process's cgroup {} is not delegated to this user (run under `systemd-run --user --scope -p Delegate=yes`)",
                own_dir.display()
            ));
        }
        (own_dir.clone(), CgroupGrant::Delegated)
    };
    let controllers = std::fs::read_to_string(parent.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(CgroupV2 { mount: mount.mount_point.clone(), parent, grant, controllers })
}

fn detect_controller(
    root: bool,
    name: &str,
    v2: &Avail<CgroupV2>,
    mounts: &[MountEntry],
    memberships: &[Membership],
) -> Avail<Controller> {
    let feature = if name == "pids" { Feature::Pids } else { Feature::Memory };
    let mut reasons = Vec::new();
    match v2 {
        Ok(v2) if v2.controllers.iter().any(|c| c == name) => {
            // The parent hands the controller down only if it is the
            // hierarchy's root or already delegates it (a populated cgroup
            // cannot start delegating: "no internal processes").
            let delegating = std::fs::read_to_string(v2.parent.join("cgroup.subtree_control"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == name);
            if v2.parent == v2.mount || delegating {
                return Ok(Controller::V2);
            }
            reasons.push(format!("v2: {} holds processes and does not delegate {name}", v2.parent.display()));
        }
        Ok(v2) => reasons.push(format!("v2: {name} is not among the controllers of {}", v2.parent.display())),
        Err(m) => reasons.push(format!("v2: {}", m.reason)),
    }
    match mounts.iter().find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == name)) {
        Some(mount) => {
            let own = memberships.iter().find(|m| m.controllers.iter().any(|c| c == name)).map(|m| m.path.as_str());
            let own_rel = own.map(|p| p.strip_prefix(mount.root.trim_end_matches('/')).unwrap_or(p)).unwrap_or("/");
            let parent = under(&mount.mount_point, own_rel);
            let ok = if root { writable(&parent) } else { owned_by_us(&parent) && writable(&parent) };
            if ok {
                return Ok(Controller::V1 { mount: mount.mount_point.clone(), parent });
            }
            reasons.push(format!("v1: {} is not writable by this user", parent.display()));
        }
        None => reasons.push(format!("v1: no {name} hierarchy is mounted")),
    }
    Err(Missing { feature, reason: reasons.join("; ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_hybrid_hierarchies() {
        let text = "\
30 23 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/pids rw,relatime shared:5 - cgroup cgroup rw,pids
32 30 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
33 23 0:29 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[1].super_options, vec!["rw", "pids"]);
        assert_eq!(mounts[2].fs_type, "cgroup2");
        assert_eq!(mounts[2].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn proc_cgroup_lines() {
        let m = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice/x.scope\n");
        assert_eq!(v2_path(&m), Some("/user.slice/x.scope"));
        assert_eq!(m[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(under(Path::new("/sys/fs/cgroup"), "/a/../b"), PathBuf::from("/sys/fs/cgroup/a/b"));
    }

    #[test]
    fn disable_names_are_checked() {
        assert_eq!(
            parse_disable(Some("cgroup, landlock,,cgroup")).ok(),
            Some(vec![Feature::Cgroup, Feature::Landlock])
        );
        let err = parse_disable(Some("cgroups")).expect_err("typo");
        assert_eq!(
            err.to_string(),
            "POD_SANDBOX_DISABLE names \"cgroups\"; known features: landlock,userns,mountns,pidns,cgroup,pids,memory"
        );
    }

    #[test]
    fn disabling_cgroup_takes_v2_limits_with_it_and_keeps_v1() {
        let mut s = Support {
            root: true,
            landlock: Ok(Landlock { abi: 7 }),
            userns: Ok(()),
            mountns: Ok(()),
            pidns: Ok(()),
            cgroup: Ok(CgroupV2 {
                mount: "/sys/fs/cgroup".into(),
                parent: "/sys/fs/cgroup".into(),
                grant: CgroupGrant::Root,
                controllers: vec!["pids".into()],
            }),
            pids: Ok(Controller::V2),
            memory: Ok(Controller::V1 { mount: "/m".into(), parent: "/m".into() }),
            disabled: vec![],
        };
        s.apply_disabled(&[Feature::Cgroup]);
        assert!(s.cgroup.is_err());
        assert_eq!(
            s.pids.as_ref().expect_err("v2 pids goes").reason,
            "the v2 controller needs a cgroup (disabled by POD_SANDBOX_DISABLE)"
        );
        assert!(s.memory.is_ok());
    }

    #[test]
    fn doctor_lines_say_each_no_with_its_reason() {
        let mut s = Support {
            root: false,
            landlock: Ok(Landlock { abi: 2 }),
            userns: Err(Missing { feature: Feature::Userns, reason: "sysctl user.max_user_namespaces is 0".into() }),
            mountns: Ok(()),
            pidns: Ok(()),
            cgroup: Ok(CgroupV2 {
                mount: "/sys/fs/cgroup".into(),
                parent: "/sys/fs/cgroup/user.slice/x.scope".into(),
                grant: CgroupGrant::Delegated,
                controllers: vec![],
            }),
            pids: Err(Missing { feature: Feature::Pids, reason: "v1: no pids hierarchy is mounted".into() }),
            memory: Ok(Controller::V2),
            disabled: vec![],
        };
        s.apply_disabled(&[Feature::Memory]);
        assert_eq!(
            s.report_lines().join("\n"),
            "\
user: not root
landlock: yes (ABI 2; truncate(2) is not controlled (needs ABI 3); signals out of the sandbox not refused (needs ABI 6))
userns: no (sysctl user.max_user_namespaces is 0)
mountns: no (needs a user namespace when not root (sysctl user.max_user_namespaces is 0))
pidns: no (needs a user namespace when not root (sysctl user.max_user_namespaces is 0))
cgroup: yes (cgroup v2 at /sys/fs/cgroup, Pod cgroups under /sys/fs/cgroup/user.slice/x.scope (delegated to this user))
pids: no (v1: no pids hierarchy is mounted)
memory: no (disabled by POD_SANDBOX_DISABLE)
simulated missing by POD_SANDBOX_DISABLE: memory"
        );
    }

    #[test]
    fn non_root_without_userns_has_no_namespaces() {
        let mut s = Support {
            root: false,
            landlock: Ok(Landlock { abi: 3 }),
            userns: Ok(()),
            mountns: Ok(()),
            pidns: Ok(()),
            cgroup: Err(Missing { feature: Feature::Cgroup, reason: "x".into() }),
            pids: Err(Missing { feature: Feature::Pids, reason: "x".into() }),
            memory: Err(Missing { feature: Feature::Memory, reason: "x".into() }),
            disabled: vec![],
        };
        s.apply_disabled(&[Feature::Userns]);
        assert_eq!(
            s.mountns.as_ref().expect_err("gone").reason,
            "needs a user namespace when not root (disabled by POD_SANDBOX_DISABLE)"
        );
        assert!(s.pidns.is_err());
    }
}
