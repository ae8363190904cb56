//! The agent as a process under test: started in the balancer's namespace with its own pin
//! directory and log, stopped and its pins removed on drop (also when the test fails).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::{unique, NetNs};

/// The xdplb binary `cargo xtask test` built (it sets XDPLB_BIN).
pub fn xdplb_bin() -> Result<String> {
    std::env::var("XDPLB_BIN").context(
        "XDPLB_BIN is not set: run the tests with `cargo xtask test`, which builds xdplb and sets it",
    )
}

pub struct Agent {
    child: Child,
    pub dir: PathBuf,
    pub pin_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Writes `config` and starts `xdplb run` in `ns` on `ifaces`; returns once it says ready.
    pub fn start(ns: &NetNs, config: &str, ifaces: &[String], mode: &str) -> Result<Agent> {
        let id = unique("xdplb-test-");
        let dir = std::env::temp_dir().join(&id);
        fs::create_dir_all(&dir)?;
        let cfg = dir.join("xdplb.toml");
        fs::write(&cfg, config)?;
        let log = dir.join("agent.log");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&id);
        let mut cmd = ns.command(&xdplb_bin()?);
        cmd.arg("run").arg("--config").arg(&cfg).arg("--pin-dir").arg(&pin_dir).args(["--xdp-mode", mode]);
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("agent.out"))?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting xdplb")?;
        let mut agent = Agent { child, dir, pin_dir, config: cfg, log };
        agent.wait_log("ready:", 1, Duration::from_secs(30))?;
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` appears `count` times in the log.
    pub fn wait_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().matches(needle).count() >= count {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("xdplb exited ({status}) before logging {needle:?}:\n{}", self.log_text());
            }
            if start.elapsed() > timeout {
                bail!("xdplb did not log {needle:?} within {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the configuration and sends SIGHUP; returns once the agent reloaded.
    pub fn reload(&mut self, config: &str) -> Result<()> {
        let before = self.log_text().matches("reloaded").count();
        fs::write(&self.config, config)?;
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        self.wait_log("reloaded", before + 1, Duration::from_secs(10))
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = lb_user::dataplane::remove_pins(&self.pin_dir);
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.log.display(), self.log_text());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
