//! Who may do what on a Pod's socket: a pure decision over the caller
//! ([`caller::identify`](super::caller::identify)), the request, and the
//! Pod's place in the tree.
//!
//! The rules: the operator (a process outside every Pod) may do
//! everything. A process of Pod X's tree may spawn children of X (only
//! there), and stop or inspect X and X's descendants; X itself counts,
//! since a workload can end its Pod by exiting anyway. Nothing else: not
//! its parent, its siblings, or another tree. Ping is open to every
//! caller of this user: it says only a name and a pid, which the registry
//! lists anyway. The ShutDown callback is not decided here: it must come
//! from the child's own Pod process (pid and start time), which the owner
//! checks against what it recorded when it started the child.
//!
//! The Pod deciding is the one that received the request. Whether X is an
//! ancestor of it comes from the registry (its current parent, whose
//! parent, ...), asked only when X is neither the operator nor itself.

use pod_proto::WireError;
use scope::PodName;

use super::caller::Caller;

/// What a request asks of the Pod that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Ping,
    /// Status, check, log.
    Inspect,
    /// Spawn a child of this Pod.
    Spawn,
    /// Stop this Pod's child.
    StopChild(&'a PodName),
    /// Stop this Pod.
    Shutdown,
    /// A child says it goes away; checked by the owner instead.
    ChildShutDown,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Allowed if the caller's Pod is an ancestor of this one: ask again
    /// with this Pod's ancestors.
    NeedAncestors,
    Refused(WireError),
}

/// Decides `action` by `caller` on Pod `me`, whose ancestors (nearest
/// first) are `ancestors` when known. `pid` only words the refusal.
pub fn decide(caller: &Caller, action: Action<'_>, me: &PodName, ancestors: Option<&[PodName]>, pid: u32) -> Decision {
    let x = match caller {
        Caller::Operator => return Decision::Allowed,
        Caller::Pod(x) => x,
    };
    let refused = |code: &str, message: String| Decision::Refused(WireError::new(code, message));
    let runs_in = format!("process {pid} runs in pod {x}'s tree");
    let above = |ancestors: Option<&[PodName]>| match ancestors {
        _ if x == me => Some(true),
        Some(list) => Some(list.contains(x)),
        None => None,
    };
    match action {
        Action::Ping | Action::ChildShutDown => Decision::Allowed,
        Action::Spawn if x == me => Decision::Allowed,
        Action::Spawn => {
            refused("auth.spawn_denied", format!("{runs_in}; it may spawn children of {x} only, not of {me}"))
        }
        Action::StopChild(child) if child == x => Decision::Allowed,
        Action::StopChild(child) => match above(ancestors) {
            Some(true) => Decision::Allowed,
            None => Decision::NeedAncestors,
            Some(false) => refused(
                "auth.stop_denied",
                format!("{runs_in}; it may stop {x} and its descendants only, and {me}'s child {child} is not one"),
            ),
        },
        Action::Shutdown => match above(ancestors) {
            Some(true) => Decision::Allowed,
            None => Decision::NeedAncestors,
            Some(false) => refused(
                "auth.stop_denied",
                format!("{runs_in}; it may stop {x} and its descendants only, and {me} is not one"),
            ),
        },
        Action::Inspect => match above(ancestors) {
            Some(true) => Decision::Allowed,
            None => Decision::NeedAncestors,
            Some(false) => refused(
                "auth.inspect_denied",
                format!("{runs_in}; it may inspect {x} and its descendants only, not {me}"),
            ),
        },
    }
}

/// What a caller asks a Pod to do to another Pod of its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeUse {
    /// Read its end, output or log (`Ended`, `Output`, `LogOf`).
    Read,
    /// Forget it once stopped (`Remove`).
    Remove,
}

/// Decides whether `caller` may `what` `target` through a Pod: the
/// operator may; a Pod's tree may, on that Pod and its descendants only.
/// `lineage`: `target`'s ancestors, nearest first, when known. `pid` only
/// words the refusal.
pub fn decide_on_tree(
    caller: &Caller,
    what: TreeUse,
    target: &PodName,
    lineage: Option<&[PodName]>,
    pid: u32,
) -> Decision {
    let x = match caller {
        Caller::Operator => return Decision::Allowed,
        Caller::Pod(x) => x,
    };
    let (code, verb) = match what {
        TreeUse::Read => ("auth.inspect_denied", "read"),
        TreeUse::Remove => ("auth.remove_denied", "remove"),
    };
    match lineage {
        _ if x == target => Decision::Allowed,
        None => Decision::NeedAncestors,
        Some(list) if list.contains(x) => Decision::Allowed,
        Some(_) => Decision::Refused(WireError::new(
            code,
            format!("process {pid} runs in pod {x}'s tree; it may {verb} {x} and its descendants only, not {target}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PodName {
        PodName::new(s).expect("name")
    }

    fn code(d: Decision) -> String {
        match d {
            Decision::Allowed => "allowed".into(),
            Decision::NeedAncestors => "ancestors?".into(),
            Decision::Refused(e) => e.code,
        }
    }

    #[test]
    fn the_operator_may_do_everything() {
        for action in [Action::Spawn, Action::Shutdown, Action::Inspect, Action::StopChild(&n("c"))] {
            assert_eq!(decide(&Caller::Operator, action, &n("p"), None, 1), Decision::Allowed);
        }
    }

    #[test]
    fn a_pod_spawns_under_itself_only() {
        let x = Caller::Pod(n("x"));
        assert_eq!(code(decide(&x, Action::Spawn, &n("x"), None, 1)), "allowed");
        assert_eq!(code(decide(&x, Action::Spawn, &n("parent"), Some(&[]), 1)), "auth.spawn_denied");
        // Not even under its own descendant: children of X only.
        assert_eq!(code(decide(&x, Action::Spawn, &n("kid"), Some(&[n("x")]), 1)), "auth.spawn_denied");
    }

    #[test]
    fn a_pod_stops_and_inspects_itself_and_its_descendants_only() {
        let x = Caller::Pod(n("x"));
        // x's parent p receives `stop x` (StopChild x): x itself.
        assert_eq!(code(decide(&x, Action::StopChild(&n("x")), &n("p"), None, 1)), "allowed");
        // x's sibling s, a child of p: p is not below x.
        assert_eq!(code(decide(&x, Action::StopChild(&n("s")), &n("p"), None, 1)), "ancestors?");
        assert_eq!(code(decide(&x, Action::StopChild(&n("s")), &n("p"), Some(&[n("root")]), 1)), "auth.stop_denied");
        // x's grandchild g, a child of x's child k.
        assert_eq!(code(decide(&x, Action::StopChild(&n("g")), &n("k"), Some(&[n("x"), n("p")]), 1)), "allowed");
        assert_eq!(code(decide(&x, Action::Shutdown, &n("p"), Some(&[]), 1)), "auth.stop_denied");
        assert_eq!(code(decide(&x, Action::Shutdown, &n("x"), None, 1)), "allowed");
        assert_eq!(code(decide(&x, Action::Inspect, &n("x"), None, 1)), "allowed");
        assert_eq!(code(decide(&x, Action::Inspect, &n("k"), Some(&[n("x")]), 1)), "allowed");
        assert_eq!(code(decide(&x, Action::Inspect, &n("p"), Some(&[]), 1)), "auth.inspect_denied");
        assert_eq!(code(decide(&x, Action::Ping, &n("p"), None, 1)), "allowed");
    }

    #[test]
    fn a_pod_reads_itself_and_its_descendants_only() {
        let x = Caller::Pod(n("x"));
        assert_eq!(decide_on_tree(&Caller::Operator, TreeUse::Read, &n("any"), None, 1), Decision::Allowed);
        assert_eq!(code(decide_on_tree(&x, TreeUse::Read, &n("x"), None, 1)), "allowed");
        assert_eq!(code(decide_on_tree(&x, TreeUse::Read, &n("kid"), None, 1)), "ancestors?");
        assert_eq!(code(decide_on_tree(&x, TreeUse::Read, &n("grandkid"), Some(&[n("kid"), n("x")]), 1)), "allowed");
        // Its parent and its sibling are not below it.
        assert_eq!(code(decide_on_tree(&x, TreeUse::Read, &n("p"), Some(&[]), 1)), "auth.inspect_denied");
        assert_eq!(code(decide_on_tree(&x, TreeUse::Read, &n("sib"), Some(&[n("p")]), 1)), "auth.inspect_denied");
    }

    #[test]
    fn a_pod_removes_its_descendants_only() {
        let x = Caller::Pod(n("x"));
        assert_eq!(decide_on_tree(&Caller::Operator, TreeUse::Remove, &n("any"), None, 1), Decision::Allowed);
        assert_eq!(code(decide_on_tree(&x, TreeUse::Remove, &n("kid"), Some(&[n("x")]), 1)), "allowed");
        let Decision::Refused(refusal) = decide_on_tree(&x, TreeUse::Remove, &n("sib"), Some(&[n("p")]), 7) else {
            panic!("a sibling is not below x");
        };
        assert_eq!(
            format!("{} [{}]", refusal.message, refusal.code),
            "process 7 runs in pod x's tree; it may remove x and its descendants only, not sib [auth.remove_denied]"
        );
    }

    #[test]
    fn refusals_name_the_caller_and_the_target() {
        let Decision::Refused(e) = decide(&Caller::Pod(n("x")), Action::Spawn, &n("p"), None, 42) else {
            panic!("refused")
        };
        assert_eq!(e.message, "process 42 runs in pod x's tree; it may spawn children of x only, not of p");
    }
}
