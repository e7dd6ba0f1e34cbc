//! Grammar-constrained sampling: a byte-level context-free grammar ([`Grammar`]), an incremental
//! recognizer over it ([`Matcher`], llama.cpp-style sets of rule stacks), a vocabulary trie
//! ([`TokenTrie`]) to find every token the grammar allows in one walk, and
//! [`GrammarProcessor`], which masks logits to those tokens. [`schema`] compiles a JSON Schema
//! (or "any JSON object") into a grammar whose every complete sentence parses as JSON and
//! validates against the schema.
//!
//! Grammars work on bytes, not characters, so a token that ends inside a UTF-8 sequence is
//! handled like any other; string contents are constrained to well-formed UTF-8 by the grammar.
//! The module owns constraint logic only; the engine decides when to call it.

pub mod schema;

use std::sync::Arc;

pub use schema::{SchemaError, compile_json_object, compile_schema};

use crate::tokenizer::Tokenizer;

/// One element of a rule's alternative: a byte class or a reference to another rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// Inclusive byte ranges.
    Bytes(Box<[(u8, u8)]>),
    Rule(u32),
}

impl Elem {
    pub fn byte(b: u8) -> Elem {
        Elem::Bytes(Box::new([(b, b)]))
    }
    fn matches(&self, b: u8) -> bool {
        match self {
            Elem::Bytes(r) => r.iter().any(|&(lo, hi)| lo <= b && b <= hi),
            Elem::Rule(_) => false,
        }
    }
}

/// A context-free grammar over bytes: rules → alternatives → sequences. No left recursion.
#[derive(Debug, Clone, Default)]
pub struct Grammar {
    rules: Vec<Vec<Vec<Elem>>>,
    root: u32,
}

/// Most stacks a matcher keeps; past this the grammar is too ambiguous to follow cheaply.
const MAX_STACKS: usize = 4096;

impl Grammar {
    /// Adds an empty rule and returns its id (fill it with [`Grammar::set`]).
    pub fn reserve(&mut self) -> u32 {
        self.rules.push(Vec::new());
        (self.rules.len() - 1) as u32
    }
    pub fn set(&mut self, rule: u32, alts: Vec<Vec<Elem>>) {
        self.rules[rule as usize] = alts;
    }
    pub fn add(&mut self, alts: Vec<Vec<Elem>>) -> u32 {
        let r = self.reserve();
        self.set(r, alts);
        r
    }
    /// A rule matching exactly `s`.
    pub fn literal(&mut self, s: &[u8]) -> u32 {
        self.add(vec![s.iter().map(|&b| Elem::byte(b)).collect()])
    }
    pub fn set_root(&mut self, r: u32) {
        self.root = r;
    }
    pub fn n_rules(&self) -> usize {
        self.rules.len()
    }
}

/// Position in a rule: (rule, alternative, element index).
type Frame = (u32, u32, u32);
type Stack = Vec<Frame>;

/// The recognizer's state: every way the bytes so far can continue.
#[derive(Debug, Clone)]
pub struct Matcher {
    grammar: Arc<Grammar>,
    stacks: Vec<Stack>,
}

fn expand(g: &Grammar, mut stack: Stack, out: &mut Vec<Stack>) {
    loop {
        if out.len() > MAX_STACKS {
            return;
        }
        let Some(&(r, a, p)) = stack.last() else {
            out.push(stack);
            return;
        };
        let seq = &g.rules[r as usize][a as usize];
        if p as usize == seq.len() {
            stack.pop();
            continue;
        }
        match &seq[p as usize] {
            Elem::Bytes(_) => {
                out.push(stack);
                return;
            }
            Elem::Rule(r2) => {
                let mut base = stack;
                if let Some(top) = base.last_mut() {
                    top.2 += 1;
                    if top.2 as usize == seq.len() {
                        base.pop();
                    }
                }
                let n = g.rules[*r2 as usize].len();
                for alt in 0..n {
                    let mut s = base.clone();
                    s.push((*r2, alt as u32, 0));
                    expand(g, s, out);
                }
                return;
            }
        }
    }
}

fn dedup(v: &mut Vec<Stack>) {
    v.sort_unstable();
    v.dedup();
}

impl Matcher {
    pub fn new(grammar: Arc<Grammar>) -> Matcher {
        let mut stacks = Vec::new();
        let root = grammar.root;
        for alt in 0..grammar.rules[root as usize].len() {
            expand(&grammar, vec![(root, alt as u32, 0)], &mut stacks);
        }
        dedup(&mut stacks);
        Matcher { grammar, stacks }
    }

    fn advance(g: &Grammar, stacks: &[Stack], b: u8) -> Vec<Stack> {
        let mut out = Vec::new();
        for s in stacks {
            let Some(&(r, a, p)) = s.last() else { continue };
            let el = &g.rules[r as usize][a as usize][p as usize];
            if el.matches(b) {
                let mut n = s.clone();
                if let Some(top) = n.last_mut() {
                    top.2 += 1;
                }
                expand(g, n, &mut out);
            }
        }
        dedup(&mut out);
        out
    }

    /// Feeds bytes; returns false (and leaves the state unchanged) if they are not allowed.
    pub fn accept_bytes(&mut self, bytes: &[u8]) -> bool {
        let mut cur = self.stacks.clone();
        for &b in bytes {
            cur = Matcher::advance(&self.grammar, &cur, b);
            if cur.is_empty() {
                return false;
            }
        }
        self.stacks = cur;
        true
    }

    /// The bytes so far form a complete sentence.
    pub fn is_accepting(&self) -> bool {
        self.stacks.iter().any(|s| s.is_empty())
    }

    /// Nothing may follow: the sentence is complete and cannot be extended.
    pub fn is_finished(&self) -> bool {
        self.stacks.iter().all(|s| s.is_empty())
    }

    /// The matcher can make no progress at all (a dead state).
    pub fn is_dead(&self) -> bool {
        self.stacks.is_empty()
    }
}

/// (children sorted by byte, tokens ending here)
type TrieNode = (Vec<(u8, u32)>, Vec<u32>);

/// Every vocabulary token's bytes, in a trie, for one walk per sampling step.
#[derive(Debug, Default)]
pub struct TokenTrie {
    nodes: Vec<TrieNode>,
    /// End-of-generation tokens: allowed exactly when the grammar is accepting.
    eog: Vec<u32>,
    n_vocab: usize,
}

impl TokenTrie {
    /// Built from the tokenizer: control/special tokens other than end-of-generation ones are
    /// never allowed under a grammar.
    pub fn new(tok: &Tokenizer) -> TokenTrie {
        let mut t = TokenTrie {
            nodes: vec![(Vec::new(), Vec::new())],
            eog: Vec::new(),
            n_vocab: tok.vocab_size(),
        };
        for id in 0..tok.vocab_size() as u32 {
            if tok.is_eog(id) {
                t.eog.push(id);
                continue;
            }
            let Ok(bytes) = tok.piece_bytes(id, false) else {
                continue;
            };
            if bytes.is_empty() {
                continue;
            }
            let mut node = 0usize;
            for &b in bytes {
                node = match t.nodes[node].0.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => t.nodes[node].0[i].1 as usize,
                    Err(i) => {
                        t.nodes.push((Vec::new(), Vec::new()));
                        let new = (t.nodes.len() - 1) as u32;
                        t.nodes[node].0.insert(i, (b, new));
                        new as usize
                    }
                };
            }
            t.nodes[node].1.push(id);
        }
        t
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Tokens whose bytes the matcher accepts (plus EOG when it is accepting).
    pub fn allowed(&self, m: &Matcher) -> Vec<u32> {
        let mut out = Vec::new();
        if m.is_accepting() {
            out.extend_from_slice(&self.eog);
        }
        self.walk(0, &m.grammar, &m.stacks, &mut out);
        out
    }

    fn walk(&self, node: usize, g: &Grammar, stacks: &[Stack], out: &mut Vec<u32>) {
        for &(b, child) in &self.nodes[node].0 {
            // Quick reject: no stack's next element takes this byte.
            if !stacks.iter().any(|s| {
                s.last().is_some_and(|&(r, a, p)| {
                    g.rules[r as usize][a as usize][p as usize].matches(b)
                })
            }) {
                continue;
            }
            let next = Matcher::advance(g, stacks, b);
            if next.is_empty() {
                continue;
            }
            out.extend_from_slice(&self.nodes[child as usize].1);
            self.walk(child as usize, g, &next, out);
        }
    }
}

/// Masks logits to the tokens a grammar allows and tracks accepted tokens.
#[derive(Debug)]
pub struct GrammarProcessor {
    matcher: Matcher,
    trie: Arc<TokenTrie>,
    tokenizer: Tokenizer,
    allowed: Vec<bool>,
}

impl GrammarProcessor {
    pub fn new(grammar: Arc<Grammar>, trie: Arc<TokenTrie>, tokenizer: Tokenizer) -> Self {
        GrammarProcessor {
            matcher: Matcher::new(grammar),
            allowed: vec![false; trie.n_vocab()],
            trie,
            tokenizer,
        }
    }

    /// Sets every disallowed logit to -inf. If nothing is allowed (a dead state), EOG tokens
    /// stay allowed so that generation ends instead of producing garbage.
    pub fn process(&mut self, logits: &mut [f32]) {
        let ok = self.trie.allowed(&self.matcher);
        self.allowed.iter_mut().for_each(|a| *a = false);
        if self.allowed.len() < logits.len() {
            self.allowed.resize(logits.len(), false);
        }
        let ok: &[u32] = if ok.is_empty() { &self.trie.eog } else { &ok };
        for &t in ok {
            if let Some(a) = self.allowed.get_mut(t as usize) {
                *a = true;
            }
        }
        for (l, a) in logits.iter_mut().zip(&self.allowed) {
            if !*a {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Advances over a sampled token (EOG tokens and unknown ids leave the state alone).
    pub fn accept(&mut self, token: u32) {
        if self.tokenizer.is_eog(token) {
            return;
        }
        if let Ok(bytes) = self.tokenizer.piece_bytes(token, false) {
            let bytes = bytes.to_vec();
            let _ = self.matcher.accept_bytes(&bytes);
        }
    }

    /// The output is a complete sentence and nothing may follow.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_finished()
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

impl crate::engine::LogitsProcessor for GrammarProcessor {
    fn process(&mut self, logits: &mut [f32]) {
        GrammarProcessor::process(self, logits)
    }
    fn accept(&mut self, token: u32) {
        GrammarProcessor::accept(self, token)
    }
    fn is_complete(&self) -> bool {
        GrammarProcessor::is_complete(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit_grammar() -> Arc<Grammar> {
        // root ::= "ab" | "a" "c"*
        let mut g = Grammar::default();
        let ab = g.literal(b"ab");
        let cs = g.reserve();
        g.set(cs, vec![vec![], vec![Elem::byte(b'c'), Elem::Rule(cs)]]);
        let a = g.literal(b"a");
        let root = g.add(vec![
            vec![Elem::Rule(ab)],
            vec![Elem::Rule(a), Elem::Rule(cs)],
        ]);
        g.set_root(root);
        Arc::new(g)
    }

    #[test]
    fn matcher_follows_alternatives() {
        let g = lit_grammar();
        let mut m = Matcher::new(g.clone());
        assert!(!m.is_accepting());
        assert!(m.accept_bytes(b"a"));
        assert!(m.is_accepting() && !m.is_finished());
        assert!(!m.accept_bytes(b"x"), "x is not allowed");
        assert!(m.accept_bytes(b"b"));
        assert!(m.is_finished());
        let mut m = Matcher::new(g);
        assert!(m.accept_bytes(b"accc"));
        assert!(m.is_accepting() && !m.is_finished());
    }
}
