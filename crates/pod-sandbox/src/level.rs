//! Which level a Pod gets, and which containment: pure functions of what the
//! machine supports ([`Support`]) and what the Pod asks for.
//!
//! The default is the strongest level the machine and the rules allow; an
//! explicit request is given exactly or refused with the missing feature or
//! the rule; a child is never enforced less than its parent (`floor`).

use serde::Serialize;

use crate::detect::{Controller, Missing, Support};
use crate::policy::{plan, Level, Plan, Policy};
use crate::SandboxError;

/// The level given, its plan, and what the user should hear about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub level: Level,
    pub plan: Plan,
    /// Why each stronger level was not given (default choice only), and
    /// what this level does not cover on this kernel (e.g. truncate below
    /// Landlock ABI 3). `pod start` prints these loudly.
    pub notes: Vec<String>,
}

/// Why `level` cannot be had on this machine at all (rules aside).
fn machine_lacks(support: &Support, level: Level) -> Option<&Missing> {
    match level {
        Level::Off => None,
        Level::Landlock => support.landlock.as_ref().err(),
        Level::Full => support.landlock.as_ref().err().or(support.mountns.as_ref().err()),
    }
}

fn gaps(support: &Support, level: Level) -> Vec<String> {
    let Ok(ll) = support.landlock else { return Vec::new() };
    if level == Level::Off {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !ll.refer() {
        out.push(format!("Landlock ABI {}: renames and links across directories are refused even inside the write scope (ABI 2 allows them)", ll.abi));
    }
    if !ll.truncate() {
        out.push(format!(
            "Landlock ABI {}: truncate(2) outside the write scope is not prevented (needs ABI 3)",
            ll.abi
        ));
    }
    if !ll.signal_scope() {
        out.push(format!(
            "Landlock ABI {}: the workload can signal processes outside it, its supervisor included (needs ABI 6)",
            ll.abi
        ));
    }
    out
}

/// Picks the level. `requested`: `--enforce` (or `POD_ENFORCE`); `floor`:
/// the parent's level, for a child.
pub fn choose_level(
    support: &Support,
    policy: &Policy,
    requested: Option<Level>,
    floor: Option<Level>,
) -> Result<Choice, SandboxError> {
    if let (Some(want), Some(floor)) = (requested, floor) {
        if want < floor {
            return Err(SandboxError::Refused(format!(
                "--enforce {want} is weaker than the parent's level {floor}; a child is never enforced less than its parent"
            )));
        }
    }
    let attempt = |level: Level| -> Result<Plan, String> {
        if let Some(m) = machine_lacks(support, level) {
            return Err(format!("{}: {}", m.feature, m.reason));
        }
        plan(level, policy)
    };
    if let Some(level) = requested {
        return match attempt(level) {
            Ok(plan) => Ok(Choice { level, plan, notes: gaps(support, level) }),
            Err(why) => {
                let lacks = machine_lacks(support, level).is_some();
                let text = format!("cannot enforce at level {level}: {why}");
                Err(if lacks { SandboxError::Unsupported(text) } else { SandboxError::Refused(text) })
            }
        };
    }
    let mut notes = Vec::new();
    for level in [Level::Full, Level::Landlock, Level::Off] {
        match attempt(level) {
            Ok(plan) => {
                if let Some(floor) = floor.filter(|f| level < *f) {
                    notes.push(format!("the parent is enforced at {floor}"));
                    return Err(SandboxError::Refused(format!(
                        "this child can be enforced at {level} at best ({}), weaker than its parent's {floor}",
                        notes.join("; ")
                    )));
                }
                notes.extend(gaps(support, level));
                return Ok(Choice { level, plan, notes });
            }
            Err(why) => notes.push(format!("not {level}: {why}")),
        }
    }
    unreachable!("level off always has a plan")
}

/// How the workload's processes are held together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// A cgroup v2 per Pod, ended with `cgroup.kill`.
    Cgroup,
    /// A supervisor that is the init of a PID namespace: its death ends
    /// every process in it.
    PidNamespace,
    /// A supervisor that is the subreaper of the tree: orphans come back to
    /// it, and it ends them.
    Subreaper,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Cgroup => "cgroup",
            Mechanism::PidNamespace => "pid-namespace supervisor",
            Mechanism::Subreaper => "subreaper supervisor",
        }
    }
}

/// Per-Pod resource limits (`--max-pids`, `--memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_pids: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// Smallest accepted `--max-pids` (the helper chain needs a few) and
/// `--memory` (below it even the helper cannot start).
pub const MIN_MAX_PIDS: u32 = 8;
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// The containment a Pod gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainmentChoice {
    pub mechanism: Mechanism,
    pub pids: Option<Controller>,
    pub memory: Option<Controller>,
    /// Why a stronger mechanism was not used.
    pub notes: Vec<String>,
}

/// Picks the mechanism: a cgroup where one can be had, else the init of a
/// PID namespace, else a subreaper. Limits need their controller.
pub fn choose_containment(support: &Support, limits: &Limits) -> Result<ContainmentChoice, SandboxError> {
    let mut notes = Vec::new();
    let mechanism = match (&support.cgroup, &support.pidns) {
        (Ok(_), _) => Mechanism::Cgroup,
        (Err(c), Ok(())) => {
            notes.push(format!("no cgroup: {}", c.reason));
            Mechanism::PidNamespace
        }
        (Err(c), Err(p)) => {
            notes.push(format!("no cgroup: {}", c.reason));
            notes.push(format!("no PID namespace: {}", p.reason));
            Mechanism::Subreaper
        }
    };
    let controller = |asked: bool, avail: &Result<Controller, Missing>, flag: &str| match (asked, avail) {
        (false, _) => Ok(None),
        (true, Ok(c)) => Ok(Some(c.clone())),
        (true, Err(m)) => Err(SandboxError::Unsupported(format!(
            "{flag} needs the {} controller, which this machine does not offer: {}",
            m.feature, m.reason
        ))),
    };
    if let Some(n) = limits.max_pids.filter(|n| *n < MIN_MAX_PIDS) {
        return Err(SandboxError::BadRequest(format!(
            "--max-pids {n} is below {MIN_MAX_PIDS}, the fewest a workload and its helpers run with"
        )));
    }
    if let Some(n) = limits.memory_bytes.filter(|n| *n < MIN_MEMORY_BYTES) {
        return Err(SandboxError::BadRequest(format!(
            "--memory {n} is below {MIN_MEMORY_BYTES} bytes, the least a workload starts with"
        )));
    }
    let pids = controller(limits.max_pids.is_some(), &support.pids, "--max-pids")?;
    let memory = controller(limits.memory_bytes.is_some(), &support.memory, "--memory")?;
    Ok(ContainmentChoice { mechanism, pids, memory, notes })
}

/// For `pod doctor`: the level a Pod with a plain write scope would get.
pub fn best_level(support: &Support) -> Level {
    [Level::Full, Level::Landlock].into_iter().find(|l| machine_lacks(support, *l).is_none()).unwrap_or(Level::Off)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use scope::{ScopePath, ScopeRule};

    use super::*;
    use crate::detect::{CgroupGrant, CgroupV2, Feature, Landlock};

    fn p(s: &str) -> ScopePath {
        ScopePath::new(s).expect("path")
    }
    fn everything() -> Support {
        Support {
            root: true,
            landlock: Ok(Landlock { abi: 7 }),
            userns: Ok(()),
            mountns: Ok(()),
            pidns: Ok(()),
            cgroup: Ok(CgroupV2 {
                mount: "/sys/fs/cgroup/unified".into(),
                parent: "/sys/fs/cgroup/unified".into(),
                grant: CgroupGrant::Root,
                controllers: vec![],
            }),
            pids: Ok(Controller::V1 { mount: "/sys/fs/cgroup/pids".into(), parent: "/sys/fs/cgroup/pids".into() }),
            memory: Err(Missing { feature: Feature::Memory, reason: "v1: no memory hierarchy is mounted".into() }),
            disabled: vec![],
        }
    }
    fn policy(deny: Vec<ScopeRule>) -> Policy {
        Policy {
            allow: vec![ScopeRule::write(p("/repo"))],
            deny,
            layers: BTreeMap::new(),
            scratch: vec![],
            tmpdir: p("/tmp/t"),
            runtime_dirs: vec![p("/h/run")],
            data_dirs: vec![p("/h/data")],
        }
    }

    #[test]
    fn default_is_the_strongest_level() {
        let c = choose_level(&everything(), &policy(vec![]), None, None).expect("full");
        assert_eq!(c.level, Level::Full);
        assert!(c.notes.is_empty());
    }

    #[test]
    fn missing_features_step_the_default_down_and_say_why() {
        let mut s = everything();
        s.apply_disabled(&[Feature::Mountns]);
        let c = choose_level(&s, &policy(vec![]), None, None).expect("landlock");
        assert_eq!(c.level, Level::Landlock);
        assert_eq!(c.notes, vec!["not full: mountns: disabled by POD_SANDBOX_DISABLE"]);
        s.apply_disabled(&[Feature::Landlock]);
        let c = choose_level(&s, &policy(vec![]), None, None).expect("off");
        assert_eq!(c.level, Level::Off);
        assert_eq!(
            c.notes,
            vec![
                "not full: landlock: disabled by POD_SANDBOX_DISABLE",
                "not landlock: landlock: disabled by POD_SANDBOX_DISABLE",
            ]
        );
    }

    #[test]
    fn a_requested_level_is_given_exactly_or_refused_with_the_reason() {
        let mut s = everything();
        s.apply_disabled(&[Feature::Mountns]);
        let err = choose_level(&s, &policy(vec![]), Some(Level::Full), None).expect_err("no mountns");
        assert_eq!(err.code(), "enforce.unsupported");
        assert_eq!(err.to_string(), "cannot enforce at level full: mountns: disabled by POD_SANDBOX_DISABLE");
        let carve = policy(vec![ScopeRule::write(p("/repo/vendor"))]);
        let err = choose_level(&everything(), &carve, Some(Level::Landlock), None).expect_err("carve-out");
        assert_eq!(err.code(), "enforce.refused");
        assert_eq!(
            err.to_string(),
            "cannot enforce at level landlock: deny write /repo/vendor/** lies inside allow write /repo/**; Landlock cannot carve it out (level full can)"
        );
        let off = choose_level(&everything(), &carve, Some(Level::Off), None).expect("off is always possible");
        assert_eq!(off.level, Level::Off);
    }

    #[test]
    fn a_child_is_never_weaker_than_its_parent() {
        let err = choose_level(&everything(), &policy(vec![]), Some(Level::Off), Some(Level::Full)).expect_err("off");
        assert_eq!(
            err.to_string(),
            "--enforce off is weaker than the parent's level full; a child is never enforced less than its parent"
        );
        let mut s = everything();
        s.apply_disabled(&[Feature::Mountns]);
        let err = choose_level(&s, &policy(vec![]), None, Some(Level::Full)).expect_err("weaker");
        assert_eq!(
            err.to_string(),
            "this child can be enforced at landlock at best (not full: mountns: disabled by POD_SANDBOX_DISABLE; the parent is enforced at full), weaker than its parent's full"
        );
    }

    #[test]
    fn old_landlock_abis_are_noted() {
        let mut s = everything();
        s.landlock = Ok(Landlock { abi: 2 });
        let c = choose_level(&s, &policy(vec![]), Some(Level::Landlock), None).expect("landlock");
        assert_eq!(
            c.notes,
            vec![
                "Landlock ABI 2: truncate(2) outside the write scope is not prevented (needs ABI 3)",
                "Landlock ABI 2: the workload can signal processes outside it, its supervisor included (needs ABI 6)",
            ]
        );
    }

    #[test]
    fn containment_falls_back_and_limits_need_controllers() {
        let s = everything();
        let c = choose_containment(&s, &Limits { max_pids: Some(50), memory_bytes: None }).expect("pids v1");
        assert_eq!(c.mechanism, Mechanism::Cgroup);
        assert!(matches!(c.pids, Some(Controller::V1 { .. })));
        let err =
            choose_containment(&s, &Limits { max_pids: None, memory_bytes: Some(1 << 30) }).expect_err("no memory");
        assert_eq!(err.to_string(), "--memory needs the memory controller, which this machine does not offer: v1: no memory hierarchy is mounted");
        let mut s = everything();
        s.apply_disabled(&[Feature::Cgroup]);
        assert_eq!(choose_containment(&s, &Limits::default()).expect("pidns").mechanism, Mechanism::PidNamespace);
        s.apply_disabled(&[Feature::Pidns]);
        let c = choose_containment(&s, &Limits::default()).expect("subreaper");
        assert_eq!(c.mechanism, Mechanism::Subreaper);
        assert_eq!(
            c.notes,
            vec!["no cgroup: disabled by POD_SANDBOX_DISABLE", "no PID namespace: disabled by POD_SANDBOX_DISABLE"]
        );
    }
}
