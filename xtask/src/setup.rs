//! Idempotent set-up, one line per step. Everything goes into folders the project owns
//! (target/tools), except Debian packages and the nightly's rust-src component.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{run, workspace};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Commands the tests and the lab need, and the Debian package that brings each.
const PACKAGES: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nsenter", "util-linux"),
    ("sysctl", "procps"),
    // promtool checks the /metrics output in the tests.
    ("promtool", "prometheus"),
    // The lab's and the end-to-end tests' real etcd cluster.
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    // The runtime API is tested the way operators use it; the unit is checked by systemd.
    ("socat", "socat"),
    ("systemd-analyze", "systemd"),
    // `cargo xtask package` and its test: the package's dependencies, its build, its checks.
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("dpkg-deb", "dpkg"),
    ("strip", "binutils"),
    ("lintian", "lintian"),
    // Two balancers behind a VIP: the HA tests, `cargo xtask run -- --ha`, the example's check.
    ("keepalived", "keepalived"),
];

/// What the benchmark adds (its quick run is part of `cargo xtask test`): the HTTP server on
/// the backends, the load generators, the contenders, and the chart's PNG converter.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("wrk", "wrk"),
    ("nginx", "nginx-light"),
    ("curl", "curl"),
    ("haproxy", "haproxy"),
    ("nft", "nftables"),
    ("rsvg-convert", "librsvg2-bin"),
];

pub fn all() -> Result<()> {
    lint_tools()?;
    rust_src()?;
    bpf_linker()?;
    packages(&[PACKAGES, BENCH_PACKAGES].concat())?;
    bpffs()?;
    Ok(())
}

fn step(name: &str, state: &str) {
    println!("xtask setup: {name:<12} {state}");
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// rustfmt and clippy on the toolchain that builds the workspace (`cargo xtask lint` runs them).
fn lint_tools() -> Result<()> {
    let have = |tool: &str| Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|o| o.status.success());
    if have("fmt") && have("clippy") {
        step("rustfmt", "present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    step("rustfmt", "installed, with clippy");
    Ok(())
}

fn rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("nightly", "installing (rustup toolchain install nightly)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let installed =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src", "present");
        return Ok(());
    }
    step("rust-src", "installing for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker built against the nightly's own libLLVM (no system LLVM of the right version
/// exists here), into target/tools; the rpath points at target/tools/llvm/lib.
fn bpf_linker() -> Result<()> {
    let tools = workspace().join("target/tools");
    let bin = tools.join("bin/bpf-linker");
    if let Ok(v) = output(Command::new(&bin).arg("--version")) {
        if v.contains(BPF_LINKER_VERSION) {
            step("bpf-linker", &format!("present ({})", v.trim()));
            return Ok(());
        }
    }
    step("bpf-linker", &format!("building {BPF_LINKER_VERSION} against the nightly's libLLVM (about a minute)"));
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let so = fs::read_dir(&lib)?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .with_context(|| format!("no libLLVM in {}: is the nightly toolchain complete?", lib.display()))?;
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV names no LLVM version")?
        .to_string();
    let shim = tools.join("llvm/lib");
    fs::create_dir_all(&shim)?;
    for name in ["libLLVM.so", so.as_str()] {
        let link = shim.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&so), &link)?;
    }
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features"])
        .args(["--features", &format!("llvm-{major}"), "--root"])
        .arg(&tools)
        .env("LLVM_PREFIX", tools.join("llvm")))
    .context("building bpf-linker")?;
    step("bpf-linker", "installed");
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

fn packages(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        step("packages", "present");
        return Ok(());
    }
    step("packages", &format!("installing {}", missing.join(" ")));
    run(Command::new("apt-get").arg("update").arg("-qq")).context("apt-get update (are you root?)")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")) {
        step("bpffs", "mounted at /sys/fs/bpf");
        return Ok(());
    }
    if !crate::is_root() {
        step("bpffs", "not mounted (root mounts it: mount -t bpf bpf /sys/fs/bpf)");
        return Ok(());
    }
    step("bpffs", "mounting at /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
