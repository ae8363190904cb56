//! HAProxy's access rules as xdplb's per-frontend source allowlist: `acl NAME src CIDR...` with
//! `tcp-request connection reject if !NAME` (or `http-request deny if !NAME`, or the `accept`/
//! `allow if NAME` + unconditional reject forms) becomes `allow = [CIDR...]`. Anything else
//! that refuses connections cannot be kept, and losing access control is an error note.

use std::net::IpAddr;

use super::{lex::Line, notes::Notes, raw::Proxy};
use crate::config::{Cidr, Parsed};

/// `acl NAME CRITERION VALUES...`; only `src` with plain networks has an equivalent.
#[derive(Debug, Clone)]
pub(crate) struct Acl {
    line: usize,
    name: String,
    /// The networks, when the ACL is `src` with nothing but networks.
    src: Option<Vec<Cidr>>,
}

impl Acl {
    pub(super) fn parse(line: &Line) -> Acl {
        let name = line.word(1).unwrap_or_default().to_owned();
        let src = match line.args(2) {
            [criterion, values @ ..] if criterion == "src" && !values.is_empty() => {
                values.iter().map(|v| network(v)).collect::<Option<Vec<_>>>()
            }
            _ => None,
        };
        Acl { line: line.no, name, src }
    }
}

/// A network as HAProxy reads one: `ADDR`, `ADDR/LEN` (host bits are masked, as HAProxy does).
fn network(text: &str) -> Option<Cidr> {
    let (addr, len) = text.split_once('/').map_or((text, None), |(a, l)| (a, Some(l)));
    let addr: IpAddr = addr.parse().ok()?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match len {
        Some(l) => l.parse().ok().filter(|p| *p <= width)?,
        None => width,
    };
    Some(Cidr { addr: crate::config::network_of(addr, prefix), prefix })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
}

/// When a rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    Always,
    /// `if NAME`, `if !NAME`, `unless NAME`.
    Named {
        name: String,
        negated: bool,
    },
    /// `if { src CIDR... }` and its negations.
    Inline {
        nets: Vec<Cidr>,
        negated: bool,
    },
    /// Anything else: other fetches, several terms, `||`.
    Other,
}

/// A `tcp-request connection|content|session accept|reject` or `http-request allow|deny` line.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    line: usize,
    text: String,
    http: bool,
    action: Action,
    cond: Cond,
}

impl Rule {
    /// The rule, if the line accepts or refuses connections (other actions are not access rules).
    pub(super) fn parse(line: &Line) -> Option<Rule> {
        let (http, action, rest) = match (line.word(0), line.word(1), line.word(2)) {
            (Some("tcp-request"), Some("connection" | "content" | "session"), Some(a)) => (false, a, line.args(3)),
            (Some("http-request"), Some(a), _) => (true, a, line.args(2)),
            _ => return None,
        };
        let action = match action {
            "accept" | "allow" => Action::Allow,
            "reject" | "deny" | "silent-drop" | "tarpit" => Action::Deny,
            _ => return None,
        };
        // `deny_status 403` and the like come before the condition.
        let at = rest.iter().position(|w| w == "if" || w == "unless");
        let cond = match at {
            None => Cond::Always,
            Some(i) => condition(rest.get(i + 1..).unwrap_or_default(), rest.get(i).is_some_and(|w| w == "unless")),
        };
        Some(Rule { line: line.no, text: line.text(), http, action, cond })
    }
}

fn condition(words: &[String], unless: bool) -> Cond {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (negated, words) = match words.as_slice() {
        ["!", rest @ ..] => (true, rest.to_vec()),
        [first, rest @ ..] if first.len() > 1 && first.starts_with('!') => {
            let mut w = vec![first.strip_prefix('!').unwrap_or(first)];
            w.extend_from_slice(rest);
            (true, w)
        }
        _ => (false, words),
    };
    let negated = negated != unless;
    match words.as_slice() {
        [name] if !name.starts_with('{') => Cond::Named { name: (*name).to_owned(), negated },
        ["{", "src", nets @ .., "}"] if !nets.is_empty() => match nets.iter().map(|n| network(n)).collect() {
            Some(nets) => Cond::Inline { nets, negated },
            None => Cond::Other,
        },
        _ => Cond::Other,
    }
}

/// The allowlist a frontend's rules amount to, or an error note per refusing rule when they
/// are not plain source networks (every source could then connect).
pub(super) fn allowlist(p: &Proxy, notes: &mut Notes) -> Vec<Parsed<Cidr>> {
    // HAProxy ignores `http-request` rules in a TCP-mode section (and warns at start): so does
    // the translation, rather than refuse clients HAProxy lets in.
    let (rules, ignored): (Vec<Rule>, Vec<Rule>) =
        p.access_rules.iter().cloned().partition(|r| !r.http || p.mode_http.is_some());
    for r in &ignored {
        notes.warn(format!(
            "line {}: `{}`: {} {} is in mode tcp, where HAProxy ignores http-request rules; not translated, so every source may connect, as with HAProxy",
            r.line,
            r.text,
            p.kind.keyword(),
            p.name
        ));
    }
    let rules = rules.as_slice();
    if !rules.iter().any(|r| r.action == Action::Deny) {
        if let Some(first) = rules.first() {
            notes.info(format!(
                "line {}: `{}`: {} {} accepts without refusing anyone; nothing to translate",
                first.line,
                first.text,
                p.kind.keyword(),
                p.name
            ));
        }
        return Vec::new();
    }
    let (why, nets) = match shape(rules) {
        Some(cond) => match networks(p, cond) {
            Ok(nets) => (None, nets),
            Err(why) => (Some(why), Vec::new()),
        },
        None => (
            Some("xdplb translates one `reject if !ACL` (or `accept if ACL` then `reject`) on source networks".into()),
            Vec::new(),
        ),
    };
    if let Some(why) = why {
        for r in rules.iter().filter(|r| r.action == Action::Deny) {
            notes.error(format!(
                "line {}: `{}`: access rule not translated ({why}); xdplb would let every source connect to {} {}: write its `allow` list by hand",
                r.line,
                r.text,
                p.kind.keyword(),
                p.name
            ));
        }
        return Vec::new();
    }
    let listed: Vec<String> = nets.iter().map(ToString::to_string).collect();
    let first = rules.first().map_or(p.line, |r| r.line);
    let text = format!(
        "line {first}: {} {}: access rules become allow = {listed:?}: SYNs from other sources are dropped in XDP (counted as not_allowed)",
        p.kind.keyword(),
        p.name
    );
    if rules.iter().any(|r| r.http) {
        notes.warn(format!(
            "{text}; HAProxy answered them 403 after accepting, xdplb drops their SYN, so refused clients time out"
        ));
    } else {
        notes.info(text);
    }
    nets.iter().map(|n| Parsed::new(n.to_string())).collect()
}

/// The condition naming who may connect, for the shapes xdplb translates.
fn shape(rules: &[Rule]) -> Option<&Cond> {
    match rules {
        [deny] if deny.action == Action::Deny => negated(&deny.cond),
        [allow, deny] if allow.action == Action::Allow && deny.action == Action::Deny && deny.cond == Cond::Always => {
            matches!(allow.cond, Cond::Named { negated: false, .. } | Cond::Inline { negated: false, .. })
                .then_some(&allow.cond)
        }
        _ => None,
    }
}

/// `cond` when it is a negated source condition (the rule refuses everyone it does not name).
fn negated(cond: &Cond) -> Option<&Cond> {
    match cond {
        Cond::Named { negated: true, .. } | Cond::Inline { negated: true, .. } => Some(cond),
        _ => None,
    }
}

/// The networks a condition names (an ACL's lines are ORed, as in HAProxy).
fn networks(p: &Proxy, cond: &Cond) -> Result<Vec<Cidr>, String> {
    match cond {
        Cond::Inline { nets, .. } => Ok(nets.clone()),
        Cond::Named { name, .. } => {
            let acls: Vec<&Acl> = p.acls.iter().filter(|a| &a.name == name).collect();
            if acls.is_empty() {
                return Err(format!("no `acl {name}` in this section"));
            }
            let mut nets = Vec::new();
            for a in acls {
                match &a.src {
                    Some(n) => nets.extend(n.iter().copied()),
                    None => return Err(format!("`acl {name}` at line {} is not `src` with plain networks", a.line)),
                }
            }
            nets.dedup();
            Ok(nets)
        }
        Cond::Always | Cond::Other => Err("not a source condition".into()),
    }
}

/// Access rules in a backend: xdplb's allowlist is per frontend, so they are not translated.
pub(super) fn backend_rules(p: &Proxy, notes: &mut Notes) {
    for r in p.access_rules.iter().filter(|r| r.action == Action::Deny) {
        notes.error(format!(
            "line {}: `{}`: access rule in backend {} not translated; xdplb would let every source reach it: put `allow` on the frontends that send to it",
            r.line, r.text, p.name
        ));
    }
}
