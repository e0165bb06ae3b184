//! What to enforce for a Pod, decided purely from its rules: the write set
//! Landlock grants at exec, the mounts its private namespace gets at exec,
//! and the mounts that take a delegated region away from a running workload.
//!
//! Landlock only grants (an access is allowed where some rule beneath a
//! directory allows it), so a deny carved out of an allow, a hidden
//! directory, and a region delegated while the workload runs are all the
//! mount mechanism's job. At level `landlock` there is none: such rules are
//! refused here, each with a line naming the rule. Nothing in this module
//! touches the filesystem.

use std::collections::BTreeMap;

use scope::{Permission, PodName, ScopePath, ScopeRule};
use serde::{Deserialize, Serialize};

/// How strongly a workload is held to its Pod's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Containment only: the scope is bookkeeping.
    Off,
    /// Landlock at exec: writes bounded to the exec-time scope, for the
    /// workload's whole life.
    Landlock,
    /// Landlock at exec plus a private mount namespace: deny rules carved
    /// out of allows, hidden directories, and delegated regions taken away
    /// from (and given back to) the running workload.
    Full,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Landlock => "landlock",
            Level::Full => "full",
        }
    }

    /// Parses `off | landlock | full` (the `--enforce` and `POD_ENFORCE` values).
    pub fn parse(text: &str) -> Result<Level, crate::SandboxError> {
        match text {
            "off" => Ok(Level::Off),
            "landlock" => Ok(Level::Landlock),
            "full" => Ok(Level::Full),
            other => Err(crate::SandboxError::BadRequest(format!(
                "enforcement level {other:?} is not one of full, landlock, off"
            ))),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Pod's rules as enforcement sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Base allow rules (write and read).
    pub allow: Vec<ScopeRule>,
    /// Base deny rules (a write deny leaves read, a read deny removes all).
    pub deny: Vec<ScopeRule>,
    /// Delegation layers present when the workload starts (usually none).
    pub layers: BTreeMap<PodName, Vec<ScopeRule>>,
    /// Writable paths the registry does not allocate (`--scratch`).
    pub scratch: Vec<ScopePath>,
    /// The workload's private temporary directory (writable).
    pub tmpdir: ScopePath,
    /// The runtime's directories a workload must not write (POD_HOME's `run/`,
    /// the Pods' sockets and logs).
    pub runtime_dirs: Vec<ScopePath>,
    /// The stores' directories a workload must neither read nor write
    /// (POD_HOME's `data/`).
    pub data_dirs: Vec<ScopePath>,
}

/// A change of the workload's mount namespace, made by the keeper.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MountOp {
    /// Bind `target` read-only over itself. Non-recursive: only `target` and
    /// its direct entries; its existing subdirectories are bound back
    /// writable.
    ReadOnly { target: ScopePath, recursive: bool },
    /// Cover `target` with an empty read-only filesystem. Non-recursive: its
    /// existing subdirectories are bound back.
    Hide { target: ScopePath, recursive: bool },
}

impl MountOp {
    pub fn target(&self) -> &ScopePath {
        match self {
            MountOp::ReadOnly { target, .. } | MountOp::Hide { target, .. } => target,
        }
    }
}

/// What to apply at exec for one level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Directory trees (or files) where Landlock grants write; `None` at `off`.
    pub landlock: Option<LandlockPlan>,
    /// Mounts made once, before the workload starts, never undone (`full`).
    pub mounts: Vec<MountOp>,
    /// Regions delegated at exec, per child, undone when that child is
    /// reclaimed (`full`).
    pub narrowed: BTreeMap<PodName, Vec<MountOp>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Recursive write grants.
    pub write: Vec<ScopePath>,
    /// Trees file reads are refused in (level `landlock`, the data dirs):
    /// reads are then granted beneath every sibling along the way instead
    /// of beneath `/` (see `landlock.rs`).
    pub hide: Vec<ScopePath>,
}

fn rule_line(kind: &str, rule: &ScopeRule) -> String {
    format!("{kind} {rule}")
}

fn subtree(path: &ScopePath) -> ScopeRule {
    ScopeRule::new(path.clone(), Permission::Write, true)
}

/// The plan for `level`, or the line that names the rule it cannot express.
pub fn plan(level: Level, policy: &Policy) -> Result<Plan, String> {
    if level == Level::Off {
        return Ok(Plan::default());
    }
    let full = level == Level::Full;
    let protected: Vec<(&ScopePath, &str)> = policy
        .runtime_dirs
        .iter()
        .map(|p| (p, "the runtime's files"))
        .chain(policy.data_dirs.iter().map(|p| (p, "the stores' files")))
        .collect();

    // Candidate write grants: base write allows, scratch paths, TMPDIR.
    let mut grants: Vec<(ScopeRule, String)> = Vec::new();
    for rule in policy.allow.iter().filter(|r| r.permission == Permission::Write) {
        if !rule.recursive {
            return Err(format!(
                "{} is not recursive; Landlock grants write to whole trees only, so enforcement cannot give write to a directory's entries without their subdirectories",
                rule_line("allow", rule)
            ));
        }
        grants.push((rule.clone(), rule_line("allow", rule)));
    }
    for path in &policy.scratch {
        grants.push((subtree(path), format!("scratch {path}")));
    }
    grants.push((subtree(&policy.tmpdir), format!("TMPDIR {}", policy.tmpdir)));

    for (grant, line) in &grants {
        if let Some((dir, what)) = protected.iter().find(|(p, _)| grant.target.is_within(p)) {
            return Err(format!("{line} lies inside {dir} ({what}); a workload may never write there"));
        }
    }

    let mut mounts = Vec::new();
    let mut narrowed: BTreeMap<PodName, Vec<MountOp>> = BTreeMap::new();

    // Caps: base denies, and write rules delegated to children at exec.
    // A cap covering a grant drops the grant; one cutting into it is a
    // carve-out (a mount at `full`, refused at `landlock`).
    let mut dropped = vec![false; grants.len()];
    let caps =
        policy.deny.iter().map(|d| (None, d)).chain(policy.layers.iter().flat_map(|(c, rules)| {
            rules.iter().filter(|r| r.permission == Permission::Write).map(move |r| (Some(c), r))
        }));
    for (child, cap) in caps {
        let mut cuts = false;
        for (i, (grant, _)) in grants.iter().enumerate() {
            if cap.covers(grant) {
                dropped[i] = true;
            } else if cap.overlaps(grant) {
                cuts = true;
                if !full {
                    let what = match child {
                        None => rule_line("deny", cap),
                        Some(c) => format!("{cap} delegated to {c}"),
                    };
                    return Err(format!(
                        "{what} lies inside {}; Landlock cannot carve it out (level full can)",
                        grants[i].1
                    ));
                }
            }
        }
        let hides = child.is_none() && cap.permission == Permission::Read;
        if hides && !full {
            return Err(format!(
                "{} would need reads refused inside what programs may read; Landlock cannot carve it out (level full can)",
                rule_line("deny", cap)
            ));
        }
        match (child, hides) {
            (None, true) => mounts.push(MountOp::Hide { target: cap.target.clone(), recursive: cap.recursive }),
            (None, false) if cuts => {
                mounts.push(MountOp::ReadOnly { target: cap.target.clone(), recursive: cap.recursive })
            }
            (Some(c), _) if cuts => narrowed
                .entry(c.clone())
                .or_default()
                .push(MountOp::ReadOnly { target: cap.target.clone(), recursive: cap.recursive }),
            _ => {}
        }
    }

    // The runtime's own directories inside a grant.
    let kept: Vec<&ScopeRule> = grants.iter().zip(&dropped).filter(|(_, d)| !**d).map(|((g, _), _)| g).collect();
    let mut hide = Vec::new();
    for dir in &policy.runtime_dirs {
        if let Some(grant) = kept.iter().find(|g| dir.is_within(&g.target)) {
            if !full {
                return Err(format!(
                    "write {} contains {dir} (the runtime's files); Landlock cannot carve it out (level full can)",
                    grant.region()
                ));
            }
            mounts.push(MountOp::ReadOnly { target: dir.clone(), recursive: true });
        }
    }
    for dir in &policy.data_dirs {
        if full {
            mounts.push(MountOp::Hide { target: dir.clone(), recursive: true });
        } else if let Some(grant) = kept.iter().find(|g| dir.is_within(&g.target)) {
            return Err(format!(
                "write {} contains {dir} (the stores' files); Landlock cannot carve it out (level full can)",
                grant.region()
            ));
        } else {
            hide.push(dir.clone());
        }
    }

    let mut write: Vec<ScopePath> = kept.iter().map(|g| g.target.clone()).collect();
    write.sort();
    write.dedup();
    // Mounts run outermost first, so an inner one is not buried under an
    // outer bind.
    mounts.sort_by_key(|m| (m.target().depth(), m.target().clone()));
    mounts.dedup();
    Ok(Plan { landlock: Some(LandlockPlan { write, hide }), mounts, narrowed })
}

/// The mounts that take `rules` (a child's delegation) away from a running
/// workload at `full`: a read-only bind over each write rule. Read rules
/// take nothing from the parent.
pub fn narrowing(rules: &[ScopeRule]) -> Vec<MountOp> {
    let mut ops: Vec<MountOp> = rules
        .iter()
        .filter(|r| r.permission == Permission::Write)
        .map(|r| MountOp::ReadOnly { target: r.target.clone(), recursive: r.recursive })
        .collect();
    ops.sort_by_key(|m| (m.target().depth(), m.target().clone()));
    ops.dedup();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ScopePath {
        ScopePath::new(s).expect("path")
    }
    fn w(s: &str) -> ScopeRule {
        ScopeRule::write(p(s))
    }
    fn r(s: &str) -> ScopeRule {
        ScopeRule::read(p(s))
    }
    fn policy(allow: Vec<ScopeRule>, deny: Vec<ScopeRule>) -> Policy {
        Policy {
            allow,
            deny,
            layers: BTreeMap::new(),
            scratch: vec![],
            tmpdir: p("/tmp/pod-tmp"),
            runtime_dirs: vec![p("/home/u/.pod/run")],
            data_dirs: vec![p("/home/u/.pod/data")],
        }
    }

    #[test]
    fn plain_write_scope_is_landlock_only() {
        let pol = policy(vec![w("/repo"), r("/")], vec![]);
        for level in [Level::Landlock, Level::Full] {
            let plan = plan(level, &pol).expect("expressible");
            let ll = plan.landlock.expect("landlock");
            assert_eq!(ll.write, vec![p("/repo"), p("/tmp/pod-tmp")]);
            if level == Level::Full {
                assert_eq!(plan.mounts, vec![MountOp::Hide { target: p("/home/u/.pod/data"), recursive: true }]);
                assert!(ll.hide.is_empty());
            } else {
                assert!(plan.mounts.is_empty());
                assert_eq!(ll.hide, vec![p("/home/u/.pod/data")]);
            }
        }
        assert_eq!(plan(Level::Off, &pol), Ok(Plan::default()));
    }

    #[test]
    fn carve_outs_are_mounts_at_full_and_refused_at_landlock() {
        let deny_write = policy(vec![w("/repo")], vec![w("/repo/vendor")]);
        assert_eq!(
            plan(Level::Landlock, &deny_write),
            Err("deny write /repo/vendor/** lies inside allow write /repo/**; Landlock cannot carve it out (level full can)".into())
        );
        let full = plan(Level::Full, &deny_write).expect("full");
        assert_eq!(full.mounts[0], MountOp::ReadOnly { target: p("/repo/vendor"), recursive: true });

        let deny_read = policy(vec![w("/repo")], vec![r("/home/u/secrets")]);
        assert_eq!(
            plan(Level::Landlock, &deny_read),
            Err("deny read /home/u/secrets/** would need reads refused inside what programs may read; Landlock cannot carve it out (level full can)".into())
        );
        let full = plan(Level::Full, &deny_read).expect("full");
        assert!(full.mounts.contains(&MountOp::Hide { target: p("/home/u/secrets"), recursive: true }));
    }

    #[test]
    fn a_deny_covering_a_grant_drops_it_and_needs_no_mount() {
        let pol = policy(vec![w("/repo/sub")], vec![w("/repo")]);
        let plan = plan(Level::Landlock, &pol).expect("expressible");
        assert_eq!(plan.landlock.expect("ll").write, vec![p("/tmp/pod-tmp")]);
        assert!(plan.mounts.is_empty());
    }

    #[test]
    fn a_deny_outside_every_grant_needs_nothing() {
        let pol = policy(vec![w("/repo")], vec![w("/etc")]);
        assert_eq!(plan(Level::Landlock, &pol).expect("ok").mounts, vec![]);
    }

    #[test]
    fn layers_at_exec_are_narrowed_per_child() {
        let mut pol = policy(vec![w("/repo")], vec![]);
        let child = PodName::new("helper").expect("name");
        pol.layers.insert(child.clone(), vec![w("/repo/docs"), r("/repo/src")]);
        assert_eq!(
            plan(Level::Landlock, &pol),
            Err("write /repo/docs/** delegated to helper lies inside allow write /repo/**; Landlock cannot carve it out (level full can)".into())
        );
        let full = plan(Level::Full, &pol).expect("full");
        assert_eq!(full.narrowed[&child], vec![MountOp::ReadOnly { target: p("/repo/docs"), recursive: true }]);
    }

    #[test]
    fn the_runtime_home_is_never_writable() {
        let inside = policy(vec![w("/home/u/.pod/run/x")], vec![]);
        let err = plan(Level::Full, &inside).expect_err("refused");
        assert_eq!(err, "allow write /home/u/.pod/run/x/** lies inside /home/u/.pod/run (the runtime's files); a workload may never write there");
        let around = policy(vec![w("/home/u")], vec![]);
        assert_eq!(
            plan(Level::Landlock, &around),
            Err("write /home/u/** contains /home/u/.pod/run (the runtime's files); Landlock cannot carve it out (level full can)".into())
        );
        let full = plan(Level::Full, &around).expect("full");
        assert_eq!(
            full.mounts,
            vec![
                MountOp::Hide { target: p("/home/u/.pod/data"), recursive: true },
                MountOp::ReadOnly { target: p("/home/u/.pod/run"), recursive: true },
            ]
        );
    }

    #[test]
    fn non_recursive_write_allows_cannot_be_enforced() {
        let pol = policy(vec![ScopeRule::new(p("/repo"), Permission::Write, false)], vec![]);
        let err = plan(Level::Full, &pol).expect_err("refused");
        assert!(err.starts_with("allow write /repo/* is not recursive;"), "{err}");
    }

    #[test]
    fn narrowing_binds_write_rules_only() {
        let ops = narrowing(&[r("/repo/src"), w("/repo/docs/api"), w("/repo/docs")]);
        assert_eq!(
            ops,
            vec![
                MountOp::ReadOnly { target: p("/repo/docs"), recursive: true },
                MountOp::ReadOnly { target: p("/repo/docs/api"), recursive: true },
            ]
        );
    }
}
