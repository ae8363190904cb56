//! The command line as an operator meets it: import the seed's haproxy.cfg, validate the result,
//! and get exit code 2 with the place and the fix for a broken configuration.

use std::{path::PathBuf, process::Command};

use tests::agent::xdplb_bin;

fn xdplb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(xdplb_bin().unwrap()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(tests::netns::unique("xdplb-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_seeds_haproxy_cfg_imports_to_a_valid_config() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-haproxy.cfg");
    let (code, toml, notes) = xdplb(&["import-haproxy", seed]);
    assert_eq!(code, 0, "{notes}");
    assert!(notes.contains("ignores the status"), "the importer says why it adds the status: {notes}");
    let file = tmp("imported.toml", &toml);
    let (code, effective, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in ["bind = \"*:12379\"", "bind = \"*:16443\"", "path = \"/healthz\"", "expect_string = \"ok\"", "expect_status = 200", "inter = \"2s\"", "verify = \"none\""] {
        assert!(effective.contains(want), "missing {want} in:\n{effective}");
    }
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[test]
fn a_broken_config_is_refused_with_exit_code_2_and_every_problem() {
    let file = tmp(
        "bad.toml",
        "[[frontend]]\nname = \"f\"\nbind = \"*:70000\"\nbackend = \"nope\"\n[[backend]]\nname = \"b\"\ncheck = { rise = 0 }\nserver = [ { name = \"s\", address = \"198.18.0.21\" } ]\n",
    );
    let (code, _, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for want in [file.to_str().unwrap(), "frontend[0] \"f\".bind", "no [[backend]] named \"nope\"", "rise = 0", "server[0] \"s\".address"] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // `run` refuses the same config before touching anything.
    let (code, _, err) = xdplb(&["run", "--config", file.to_str().unwrap(), "--iface", "lo", "--pin-dir", "/sys/fs/bpf/xdplb-never"]);
    assert_eq!(code, 2, "{err}");
    assert!(!std::path::Path::new("/sys/fs/bpf/xdplb-never").exists(), "nothing pinned");
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[test]
fn the_installed_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/xdplb.toml");
    let (code, effective, err) = xdplb(&["check-config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(effective.contains("bind = \"*:12379\"") && effective.contains("bind = \"*:16443\""));
}
