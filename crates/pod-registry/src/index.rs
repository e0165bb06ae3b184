//! Which Pod holds a write allow rule where: a trie over normalized path
//! components.
//!
//! Conflict checks must not scan every allocation (the registry this
//! replaces paid O(n) per operation). A rule R can only overlap rules whose
//! target is an ancestor of R's target, R's target itself, or (for a
//! recursive R) below it, or (for a non-recursive R) one level below it; the
//! trie visits exactly those nodes, so a lookup costs the depth of R plus
//! the number of rules in R's own subtree, whatever the total.

use rustc_hash::FxHashMap;
use scope::{PodName, Region, ScopePath, ScopeRule};

/// Write allow rules of every allocation, by target.
#[derive(Debug, Default, Clone)]
pub struct WriteIndex {
    root: Node,
    len: usize,
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: FxHashMap<Box<str>, Node>,
    here: Vec<(PodName, ScopeRule)>,
}

fn components(path: &ScopePath) -> impl Iterator<Item = &str> {
    path.as_str().split('/').filter(|c| !c.is_empty())
}

impl WriteIndex {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, pod: &PodName, rule: &ScopeRule) {
        let mut node = &mut self.root;
        for c in components(&rule.target) {
            node = node.children.entry(c.into()).or_default();
        }
        node.here.push((pod.clone(), rule.clone()));
        self.len += 1;
    }

    /// Removes one (pod, rule) entry; prunes nodes left empty so the trie
    /// never outgrows the rules it holds.
    pub fn remove(&mut self, pod: &PodName, rule: &ScopeRule) {
        let comps: Vec<&str> = components(&rule.target).collect();
        if remove_at(&mut self.root, &comps, pod, rule) {
            self.len -= 1;
        }
    }

    /// Every indexed rule that may overlap `region` (a superset: callers
    /// filter with the exact `Region::intersect`).
    pub fn candidates<'a>(&'a self, region: &Region, out: &mut Vec<(&'a PodName, &'a ScopeRule)>) {
        let mut node = &self.root;
        out.extend(node.here.iter().map(|(p, r)| (p, r)));
        for c in components(region.target()) {
            match node.children.get(c) {
                Some(next) => node = next,
                None => return,
            }
            out.extend(node.here.iter().map(|(p, r)| (p, r)));
        }
        match region {
            Region::Subtree(_) => node.children.values().for_each(|n| collect_subtree(n, out)),
            Region::Level(_) => {
                node.children.values().for_each(|n| out.extend(n.here.iter().map(|(p, r)| (p, r))));
            }
            Region::Point(_) => {}
        }
    }
}

fn collect_subtree<'a>(node: &'a Node, out: &mut Vec<(&'a PodName, &'a ScopeRule)>) {
    out.extend(node.here.iter().map(|(p, r)| (p, r)));
    node.children.values().for_each(|n| collect_subtree(n, out));
}

/// Returns whether an entry was removed.
fn remove_at(node: &mut Node, comps: &[&str], pod: &PodName, rule: &ScopeRule) -> bool {
    let Some((first, rest)) = comps.split_first() else {
        let before = node.here.len();
        if let Some(i) = node.here.iter().position(|(p, r)| p == pod && r == rule) {
            node.here.swap_remove(i);
        }
        return node.here.len() < before;
    };
    let Some(child) = node.children.get_mut(*first) else { return false };
    let removed = remove_at(child, rest, pod, rule);
    if child.here.is_empty() && child.children.is_empty() {
        node.children.remove(*first);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ScopePath {
        ScopePath::new(s).expect("path")
    }

    fn n(s: &str) -> PodName {
        PodName::new(s).expect("name")
    }

    fn names(index: &WriteIndex, region: Region) -> Vec<String> {
        let mut out = Vec::new();
        index.candidates(&region, &mut out);
        let mut v: Vec<String> = out.iter().map(|(p, _)| p.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn finds_ancestors_self_and_subtree() {
        let mut ix = WriteIndex::default();
        ix.insert(&n("root"), &ScopeRule::write(p("/")));
        ix.insert(&n("a"), &ScopeRule::write(p("/a")));
        ix.insert(&n("ab"), &ScopeRule::write(p("/a/b")));
        ix.insert(&n("abc"), &ScopeRule::write(p("/a/b/c")));
        ix.insert(&n("x"), &ScopeRule::write(p("/x")));
        assert_eq!(names(&ix, Region::Subtree(p("/a/b"))), ["a", "ab", "abc", "root"]);
        assert_eq!(names(&ix, Region::Level(p("/a"))), ["a", "ab", "root"]);
        assert_eq!(names(&ix, Region::Point(p("/a"))), ["a", "root"]);
        ix.remove(&n("abc"), &ScopeRule::write(p("/a/b/c")));
        ix.remove(&n("abc"), &ScopeRule::write(p("/a/b/c")));
        assert_eq!(ix.len(), 4);
        assert_eq!(names(&ix, Region::Subtree(p("/a/b"))), ["a", "ab", "root"]);
    }

    #[test]
    fn removing_everything_prunes_the_trie() {
        let mut ix = WriteIndex::default();
        let rule = ScopeRule::write(p("/deep/er/path"));
        ix.insert(&n("a"), &rule);
        ix.remove(&n("a"), &rule);
        assert!(ix.is_empty());
        assert!(ix.root.children.is_empty());
    }
}
