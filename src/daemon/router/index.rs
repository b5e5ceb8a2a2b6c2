//! The pattern index: every subscribed pattern in one trie over its tokens, matched against
//! a channel name by walking the trie one character at a time.
//!
//! A node is a pattern prefix; its edges are literal characters (a sorted list, found by
//! binary search), one `?` edge, one `*` edge and `[...]` class edges. A `*` node loops on
//! every character. Matching keeps the set of nodes whose prefix matches the part of the
//! name read so far: a pattern that can no longer match drops out at its first character
//! that disagrees, and patterns sharing a prefix are walked once. The work per message is
//! bounded by the name's length times the number of live prefixes, whatever the number of
//! patterns that cannot match. (Class edges at one node are the exception: they are tried
//! one by one, so a node with many distinct classes costs one test each.)
//!
//! The semantics are those of [`Pattern::matches`]: whole-name match, `*` crosses `/`,
//! `?` and a class match exactly one character (`/` included).

use crate::pattern::{Pattern, Token};

/// "No node".
const NONE: u32 = u32::MAX;

struct ClassEdge {
    negated: bool,
    ranges: Box<[(char, char)]>,
    child: u32,
}

impl ClassEdge {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

struct Node {
    parent: u32,
    /// Literal edges, sorted by character.
    lits: Vec<(char, u32)>,
    /// The `?` edge.
    any: u32,
    /// The `*` edge.
    star: u32,
    /// Class edges.
    classes: Vec<ClassEdge>,
    /// This node is a `*`: it stays live on every character.
    loops: bool,
    /// The values of the patterns ending here (several pattern texts may compile to the
    /// same tokens: `a**` and `a*`).
    terminal: Vec<u32>,
}

impl Node {
    fn new(parent: u32, loops: bool) -> Node {
        Node {
            parent,
            lits: Vec::new(),
            any: NONE,
            star: NONE,
            classes: Vec::new(),
            loops,
            terminal: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.lits.is_empty()
            && self.any == NONE
            && self.star == NONE
            && self.classes.is_empty()
            && self.terminal.is_empty()
    }
}

/// Patterns in one trie; each pattern carries a value (its entry in the owner's table).
pub(super) struct PatternIndex {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Per node: the generation in which it was last added to a live set.
    mark: Vec<u32>,
    generation: u32,
    live: Vec<u32>,
    next: Vec<u32>,
    /// Trie nodes visited while matching, since the index was made.
    visits: u64,
}

impl Default for PatternIndex {
    fn default() -> PatternIndex {
        PatternIndex {
            nodes: vec![Node::new(NONE, false)],
            free: Vec::new(),
            mark: vec![0],
            generation: 0,
            live: Vec::new(),
            next: Vec::new(),
            visits: 0,
        }
    }
}

impl PatternIndex {
    fn alloc(&mut self, parent: u32, loops: bool) -> u32 {
        let node = Node::new(parent, loops);
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.mark.push(0);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// The child of `at` along `tok`, made if `create`.
    fn child(&mut self, at: u32, tok: &Token, create: bool) -> Option<u32> {
        let n = &self.nodes[at as usize];
        let found = match tok {
            Token::Star => n.star,
            Token::AnyChar => n.any,
            Token::Literal(c) => match n.lits.binary_search_by_key(c, |e| e.0) {
                Ok(i) => n.lits[i].1,
                Err(_) => NONE,
            },
            Token::Class { negated, ranges } => n
                .classes
                .iter()
                .find(|e| e.negated == *negated && *e.ranges == **ranges)
                .map_or(NONE, |e| e.child),
        };
        if found != NONE {
            return Some(found);
        }
        if !create {
            return None;
        }
        let child = self.alloc(at, matches!(tok, Token::Star));
        let n = &mut self.nodes[at as usize];
        match tok {
            Token::Star => n.star = child,
            Token::AnyChar => n.any = child,
            Token::Literal(c) => {
                let i = n.lits.binary_search_by_key(c, |e| e.0).unwrap_err();
                n.lits.insert(i, (*c, child));
            }
            Token::Class { negated, ranges } => n.classes.push(ClassEdge {
                negated: *negated,
                ranges: ranges.clone().into_boxed_slice(),
                child,
            }),
        }
        Some(child)
    }

    /// Adds `pattern` with `value` (values are the owner's; one pattern may carry several).
    pub(super) fn insert(&mut self, pattern: &Pattern, value: u32) {
        let mut at = 0;
        for tok in pattern.tokens() {
            at = self.child(at, tok, true).expect("created");
        }
        self.nodes[at as usize].terminal.push(value);
    }

    fn find(&mut self, pattern: &Pattern) -> Option<u32> {
        let mut at = 0;
        for tok in pattern.tokens() {
            at = self.child(at, tok, false)?;
        }
        Some(at)
    }

    /// Removes `value` from `pattern`; false if the pattern did not carry it.
    pub(super) fn remove(&mut self, pattern: &Pattern, value: u32) -> bool {
        let Some(mut at) = self.find(pattern) else {
            return false;
        };
        let terminal = &mut self.nodes[at as usize].terminal;
        let Some(i) = terminal.iter().position(|&v| v == value) else {
            return false;
        };
        terminal.swap_remove(i);
        // Prune the branch back to the last node something else still needs.
        while at != 0 && self.nodes[at as usize].is_empty() {
            let parent = self.nodes[at as usize].parent;
            let p = &mut self.nodes[parent as usize];
            if p.star == at {
                p.star = NONE;
            } else if p.any == at {
                p.any = NONE;
            } else if let Some(i) = p.lits.iter().position(|e| e.1 == at) {
                p.lits.remove(i);
            } else if let Some(i) = p.classes.iter().position(|e| e.child == at) {
                p.classes.remove(i);
            }
            self.nodes[at as usize] = Node::new(NONE, false);
            self.free.push(at);
            at = parent;
        }
        true
    }

    /// Adds `node` (and the `*` reached from it without reading a character) to `next`,
    /// once per generation.
    fn enter(nodes: &[Node], mark: &mut [u32], generation: u32, next: &mut Vec<u32>, node: u32) {
        let mut node = node;
        loop {
            let m = &mut mark[node as usize];
            if *m == generation {
                return;
            }
            *m = generation;
            next.push(node);
            match nodes[node as usize].star {
                NONE => return,
                star => node = star,
            }
        }
    }

    fn bump(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
        self.generation
    }

    /// Calls `found` with the value of every pattern that matches the whole of `name`.
    pub(super) fn matches(&mut self, name: &str, mut found: impl FnMut(u32)) {
        if self.nodes[0].is_empty() {
            return;
        }
        let mut live = std::mem::take(&mut self.live);
        let mut next = std::mem::take(&mut self.next);
        live.clear();
        let g = self.bump();
        Self::enter(&self.nodes, &mut self.mark, g, &mut live, 0);
        for c in name.chars() {
            if live.is_empty() {
                break;
            }
            next.clear();
            let g = self.bump();
            let nodes = &self.nodes;
            let mark = &mut self.mark;
            for &at in &live {
                self.visits += 1;
                let n = &nodes[at as usize];
                if n.loops {
                    Self::enter(nodes, mark, g, &mut next, at);
                }
                if let Ok(i) = n.lits.binary_search_by_key(&c, |e| e.0) {
                    Self::enter(nodes, mark, g, &mut next, n.lits[i].1);
                }
                if n.any != NONE {
                    Self::enter(nodes, mark, g, &mut next, n.any);
                }
                for e in &n.classes {
                    self.visits += 1;
                    if e.matches(c) {
                        Self::enter(nodes, mark, g, &mut next, e.child);
                    }
                }
            }
            std::mem::swap(&mut live, &mut next);
        }
        for &at in &live {
            self.visits += 1;
            for &t in &self.nodes[at as usize].terminal {
                found(t);
            }
        }
        self.live = live;
        self.next = next;
    }

    /// Trie nodes visited while matching, since the index was made.
    pub(super) fn visits(&self) -> u64 {
        self.visits
    }

    /// Nodes in use (the root included).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index(patterns: &[&str]) -> PatternIndex {
        let mut ix = PatternIndex::default();
        for (i, p) in patterns.iter().enumerate() {
            ix.insert(&Pattern::new(p).unwrap(), i as u32);
        }
        ix
    }

    fn found(ix: &mut PatternIndex, name: &str) -> Vec<u32> {
        let mut v = Vec::new();
        ix.matches(name, |t| v.push(t));
        v.sort_unstable();
        v
    }

    #[test]
    fn glob_semantics_through_the_index() {
        let pats = [
            "QPE/*", "*", "a?c", "ch[0-9]", "ch[!0-9]", "[]]x", "*/volume", "a*b*c",
        ];
        let mut ix = index(&pats);
        assert_eq!(found(&mut ix, "QPE/Application/x"), vec![0, 1]);
        assert_eq!(found(&mut ix, "a/c"), vec![1, 2], "? matches /");
        assert_eq!(found(&mut ix, "ch7"), vec![1, 3]);
        assert_eq!(found(&mut ix, "chx"), vec![1, 4]);
        assert_eq!(found(&mut ix, "]x"), vec![1, 5]);
        assert_eq!(found(&mut ix, "QPE/Audio/volume"), vec![0, 1, 6]);
        assert_eq!(found(&mut ix, "aXXbYYc"), vec![1, 7]);
        assert_eq!(found(&mut ix, "aéc"), vec![1, 2], "? is one character");
    }

    #[test]
    fn removal_prunes_what_no_pattern_needs() {
        let mut ix = PatternIndex::default();
        let a = Pattern::new("abc*").unwrap();
        let b = Pattern::new("abd?").unwrap();
        ix.insert(&a, 1);
        ix.insert(&b, 2);
        assert_eq!(ix.node_count(), 1 + 3 + 1 + 2);
        assert!(!ix.remove(&a, 2));
        assert!(ix.remove(&a, 1));
        assert!(!ix.remove(&a, 1));
        assert_eq!(ix.node_count(), 1 + 2 + 2);
        assert_eq!(found(&mut ix, "abdx"), vec![2]);
        assert!(ix.remove(&b, 2));
        assert_eq!(ix.node_count(), 1);
        assert_eq!(found(&mut ix, "abdx"), Vec::<u32>::new());
    }

    #[test]
    fn patterns_that_cannot_match_cost_nothing() {
        // The same message against 16 and 4,096 patterns of each shape that does not match it:
        // the walk visits the same nodes.
        let shapes = |n: usize| -> Vec<String> {
            (0..n)
                .flat_map(|i| {
                    [
                        format!("noise/{i}/*"),
                        format!("*/noise{i}"),
                        format!("?oise{i}*"),
                        format!("n[0-9]ise{i}"),
                    ]
                })
                .collect()
        };
        let visits = |n: usize| {
            let pats = shapes(n);
            let refs: Vec<&str> = pats.iter().map(String::as_str).collect();
            let mut ix = index(&refs);
            let before = ix.visits();
            assert_eq!(found(&mut ix, "bench/rr"), Vec::<u32>::new());
            ix.visits() - before
        };
        let small = visits(16);
        assert!(small > 0);
        assert_eq!(visits(1024), small);
    }

    proptest! {
        /// The index finds exactly the patterns the one-by-one matcher finds.
        #[test]
        fn index_agrees_with_the_matcher(
            pats in proptest::collection::vec("([ab/é]|\\*|\\?|\\[!?[a/]-?[b/]?\\]){0,7}", 0..24),
            names in proptest::collection::vec("[ab/é]{0,9}", 1..8),
            removed in proptest::collection::vec(any::<bool>(), 24),
        ) {
            let mut ix = PatternIndex::default();
            let compiled: Vec<Pattern> = pats.iter().map(|p| Pattern::new(p).unwrap()).collect();
            let mut present = vec![true; compiled.len()];
            for (i, p) in compiled.iter().enumerate() {
                ix.insert(p, i as u32);
            }
            for (i, p) in compiled.iter().enumerate() {
                if removed[i] {
                    prop_assert!(ix.remove(p, i as u32));
                    present[i] = false;
                }
            }
            for name in &names {
                let want: Vec<u32> = (0..compiled.len())
                    .filter(|&i| present[i] && compiled[i].matches(name))
                    .map(|i| i as u32)
                    .collect();
                prop_assert_eq!(found(&mut ix, name), want);
            }
        }
    }
}
