//! `cargo xtask`: set-up, build, test and run, each doing its own set-up first so that a fresh
//! machine needs nothing but `cargo xtask test`.
#![expect(
    clippy::unwrap_used,
    reason = "a developer's tool on the project's own tree (its folder has a parent, a child has its stdout): a panic there is a bug to fix, not input to survive"
)]

mod install;
mod manpage;
mod package;
mod setup;
mod stage;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, bpf-linker, Debian packages, bpffs.
    Setup,
    /// Set up, then build the agent (with its XDP program) and the test helpers.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// The house style: `cargo fmt --check` and clippy with warnings as errors (host crates).
    Lint,
    /// Set up, lint, build, and run every test (unit, BPF_PROG_TEST_RUN fixtures, namespace
    /// end-to-end).
    Test {
        /// Also run the long tests (minutes; CI does not).
        #[arg(long)]
        long: bool,
        /// Passed to the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and measure xdplb side by side with the direct path (see README).
    Bench {
        /// Passed to xdplb-bench, as typed: `--quick`, `--only prog,failover`, `--rounds 5`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Release build, then /usr/local/bin/xdplb, /etc/xdplb/xdplb.toml (an example; an
    /// existing one is kept), the systemd unit xdplb.service, the man page and the docs.
    Install {
        /// Install under this folder instead of / (for packaging).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Release build, then a Debian package (target/package/xdplb_VERSION_ARCH.deb) of what
    /// `install` lays out, under /usr: `apt install ./xdplb_*.deb` on a host without Rust.
    Package {
        /// Folder for the .deb and its staging tree.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Undo `install`: stop the service, detach the data path, remove the binary and the unit
    /// (the configuration in /etc/xdplb stays).
    Uninstall {
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Set up, build, and run: with no arguments a lab in network namespaces (`-- --ha`: two
    /// balancers behind a keepalived VIP; `-- --colocated`: xdplb on every master; `-- --ipv6`:
    /// the lab on IPv6, 2001:2::/48); with other arguments, `xdplb run ARGS` on this host
    /// (e.g. `-- --config /etc/xdplb/xdplb.toml --iface eth0`).
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// What `cargo xtask run -- FLAGS` hands to the lab rather than to `xdplb run`.
const LAB_FLAGS: &[&str] = &["--ha", "--colocated", "--ipv6"];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn build(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "lb-user", "--package", "integration", "--bins"]);
    if release {
        c.arg("--release");
    }
    run(&mut c).context("building xdplb (its build script builds the XDP program)")?;
    Ok(workspace().join("target").join(if release { "release" } else { "debug" }))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs cargo test, passing its output through, and closes with the totals over every test
/// binary (cargo's own last lines are those of the doc tests).
fn run_tests(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |what: &str| -> u64 {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(what).and_then(|n| n.split_whitespace().last()?.parse().ok()))
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
            ignored += count(" ignored");
        }
    }
    let status = child.wait()?;
    println!("\nxtask test: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `cargo fmt --check` over every crate, then clippy with `-D warnings` over the host crates.
/// lb-ebpf is left to the compiler: it builds only for bpfel-unknown-none (no_std, no_main,
/// aya-ebpf's BPF helpers), which host clippy cannot check; lb-user's build script builds it
/// for real, with the nightly toolchain, and its warnings show there.
fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs from rustfmt.toml (the diff is above): run `cargo fmt --all`")?;
    run(cargo().args(["clippy", "--workspace", "--exclude", "lb-ebpf", "--all-targets", "--", "-D", "warnings"]))
        .context(
            "clippy found warnings (above); fix them, or `#[expect(lint, reason = \"...\")]` where the code is right",
        )?;
    println!("xtask: fmt and clippy clean");
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (it loads BPF programs and creates network namespaces): run it with sudo");
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::all(),
        Cmd::Lint => {
            setup::all()?;
            lint()
        }
        Cmd::Build { release } => {
            setup::all()?;
            let dir = build(release)?;
            println!("xtask: built {}", dir.join("xdplb").display());
            Ok(())
        }
        Cmd::Test { long, args } => {
            require_root("cargo xtask test")?;
            setup::all()?;
            lint()?;
            let bin = build(false)?;
            let mut c = cargo();
            // lb-ebpf builds only for BPF (lb-user's build script builds it).
            c.args(["test", "--workspace", "--exclude", "lb-ebpf"]);
            c.env("XDPLB_BIN", bin.join("xdplb"));
            if long {
                c.env("XDPLB_LONG_TESTS", "1");
            }
            c.arg("--");
            c.args(&args);
            run_tests(&mut c)
        }
        Cmd::Bench { args } => {
            require_root("cargo xtask bench")?;
            setup::all()?;
            let bin = build(true)?;
            run(Command::new(bin.join("xdplb-bench")).args(&args).env("XDPLB_BIN", bin.join("xdplb")))
        }
        Cmd::Install { root } => {
            setup::all()?;
            let bin = build(true)?;
            install::install(&bin, &root)
        }
        Cmd::Package { out } => {
            setup::all()?;
            let bin = build(true)?;
            package::package(&bin, &out.unwrap_or_else(|| workspace().join("target/package"))).map(|_| ())
        }
        Cmd::Uninstall { root } => install::uninstall(&root),
        Cmd::Run { args } => {
            require_root("cargo xtask run")?;
            setup::all()?;
            let bin = build(false)?;
            // The lab's own flags; anything else is for `xdplb run`.
            if args.iter().all(|a| LAB_FLAGS.contains(&a.as_str())) {
                run(Command::new(bin.join("xdplb-lab")).args(&args).env("XDPLB_BIN", bin.join("xdplb")))
            } else {
                run(Command::new(bin.join("xdplb")).arg("run").args(&args))
            }
        }
    }
}
