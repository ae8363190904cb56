//! The import corpus: haproxy.cfg files in the shapes of the public guides operators copy
//! (kubeadm, kubespray, k3s, OpenShift UPI, kind, kubeasz, k0s, RKE2, Talos, ...), each with
//! the TOML and the notes (with severities) the importer must produce. For each, either the
//! translation has no error note and passes `check-config`'s checks, or it has one naming why
//! (and `import-haproxy` exits non-zero).
//!
//! `XDPLB_BLESS=1 cargo test --test haproxy_corpus` rewrites the expected files; review the diff.
// A test: clippy.toml's test allowances apply to #[test] functions, not to these helpers.
#![allow(clippy::unwrap_used, reason = "test helpers: a panic fails the test, which is its job")]

use std::{collections::HashMap, net::IpAddr, path::Path};

use lb_user::config::{
    haproxy::{self, ImportOptions, Severity},
    Config,
};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/haproxy");

/// The corpus's DNS: `hosts` in the corpus directory, so results do not depend on this host.
fn hosts() -> HashMap<String, IpAddr> {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("hosts")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut w = l.split_whitespace();
            let ip = w.next().unwrap().parse().unwrap();
            (w.next().unwrap().to_owned(), ip)
        })
        .collect()
}

#[test]
fn haproxy_corpus_imports_as_expected() {
    let hosts = hosts();
    let resolve = |name: &str| hosts.get(name).copied();
    let opts = ImportOptions { interfaces: vec!["eth0".into()], resolve: Some(&resolve) };
    let bless = std::env::var_os("XDPLB_BLESS").is_some();
    let mut entries: Vec<_> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("haproxy.cfg").exists())
        .collect();
    entries.sort();
    assert!(entries.len() >= 15, "the corpus has {} entries, the issue asks for at least 15", entries.len());
    let (mut clean, mut refused) = (Vec::new(), Vec::new());
    let mut failures = Vec::new();
    for dir in &entries {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let cfg = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
        let import = match haproxy::import(&cfg, &opts) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{name}: the import failed: {e}"));
                continue;
            }
        };
        let toml = haproxy::to_toml(&import);
        let notes: String = import.notes.iter().map(|n| n.to_string() + "\n").collect();
        if bless {
            std::fs::write(dir.join("expected.toml"), &toml).unwrap();
            std::fs::write(dir.join("expected.notes"), &notes).unwrap();
        }
        let want_toml = std::fs::read_to_string(dir.join("expected.toml")).unwrap_or_default();
        let want_notes = std::fs::read_to_string(dir.join("expected.notes")).unwrap_or_default();
        if toml != want_toml {
            failures.push(format!("{name}: TOML differs:\n--- expected\n{want_toml}\n--- got\n{toml}"));
        }
        if notes != want_notes {
            failures.push(format!("{name}: notes differ:\n--- expected\n{want_notes}\n--- got\n{notes}"));
        }
        let errors: Vec<_> = import.notes.iter().filter(|n| n.severity == Severity::Error).collect();
        if errors.is_empty() {
            // What `xdplb check-config` checks: the file parses and validates, TLS files load.
            match Config::parse(&toml, &dir.join("expected.toml")) {
                Ok(c) => {
                    let tls = lb_user::health::tls::config_problems(&c);
                    if !tls.is_empty() {
                        failures.push(format!("{name}: no error note, but check-config refuses: {tls}"));
                    }
                    if c.global.interfaces.is_empty() {
                        failures.push(format!("{name}: no interface: the shipped unit would refuse it"));
                    }
                }
                Err(e) => failures.push(format!("{name}: no error note, but check-config refuses: {e}")),
            }
            clean.push(name);
        } else {
            refused.push(format!("{name} ({} error{})", errors.len(), if errors.len() == 1 { "" } else { "s" }));
        }
    }
    eprintln!("corpus: {} import clean: {clean:?}", clean.len());
    eprintln!("corpus: {} refused: {refused:?}", refused.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
