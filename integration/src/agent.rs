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

/// The xdplb binary: XDPLB_BIN (`cargo xtask test` sets it), or the one beside this program
/// (the lab and bench binaries live in the same target folder).
pub fn xdplb_bin() -> Result<String> {
    if let Ok(b) = std::env::var("XDPLB_BIN") {
        return Ok(b);
    }
    let beside = std::env::current_exe()?.with_file_name("xdplb");
    if beside.exists() {
        return Ok(beside.display().to_string());
    }
    anyhow::bail!("XDPLB_BIN is not set: run the tests with `cargo xtask test`, which builds xdplb and sets it")
}

/// Where an agent under a (fake) journal sends its entries.
struct Journal {
    socket: PathBuf,
}

/// Removes what a test's data path left on the host: its pins, and beside them its lock and its
/// record of host changes (the test's namespace, where it changed them, goes too).
pub fn remove_data_path(pin_dir: &Path) {
    let _ = lb_user::dataplane::remove_pins(pin_dir);
    for (what, ext) in [("lock", ""), ("host-changes", ".json")] {
        let _ = fs::remove_file(lb_user::host::service::run_file(pin_dir, what, ext));
    }
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
        Self::start_in(
            ns,
            config,
            ifaces,
            mode,
            &std::env::temp_dir().join(&id),
            &PathBuf::from("/sys/fs/bpf").join(&id),
        )
    }

    /// The same with a given work directory and pin directory (both emptied first).
    pub fn start_in(
        ns: &NetNs,
        config: &str,
        ifaces: &[String],
        mode: &str,
        dir: &Path,
        pin_dir: &Path,
    ) -> Result<Agent> {
        let _ = lb_user::dataplane::remove_pins(pin_dir);
        Self::adopt(ns, config, ifaces, mode, dir, pin_dir)
    }

    /// Starts an agent as systemd runs it with its stderr in the journal: `JOURNAL_STREAM` names
    /// the log file, and the agent's native journal socket is `socket` (the test's own).
    pub fn start_under_journal(ns: &NetNs, config: &str, ifaces: &[String], socket: &Path) -> Result<Agent> {
        let id = unique("xdplb-test-");
        let journal = Journal { socket: socket.to_path_buf() };
        let (dir, pin_dir) = (std::env::temp_dir().join(&id), PathBuf::from("/sys/fs/bpf").join(&id));
        Self::spawn(ns, config, ifaces, "native", &dir, &pin_dir, Some(&journal))
    }

    /// Starts an agent on a pin directory a previous agent left (restart, upgrade).
    pub fn adopt(ns: &NetNs, config: &str, ifaces: &[String], mode: &str, dir: &Path, pin_dir: &Path) -> Result<Agent> {
        Self::spawn(ns, config, ifaces, mode, dir, pin_dir, None)
    }

    fn spawn(
        ns: &NetNs,
        config: &str,
        ifaces: &[String],
        mode: &str,
        dir: &Path,
        pin_dir: &Path,
        journal: Option<&Journal>,
    ) -> Result<Agent> {
        let _ = fs::remove_dir_all(dir);
        let (dir, pin_dir) = (dir.to_path_buf(), pin_dir.to_path_buf());
        fs::create_dir_all(&dir)?;
        let cfg = dir.join("xdplb.toml");
        fs::write(&cfg, config)?;
        let log = dir.join("agent.log");
        let mut cmd = ns.command(&xdplb_bin()?);
        cmd.arg("run").arg("--config").arg(&cfg).arg("--pin-dir").arg(&pin_dir).args(["--xdp-mode", mode]);
        // Per agent, so that tests side by side never share a socket or a state file; the state
        // file stays with the pin directory's name so that an adopting agent finds it.
        let state_dir =
            std::env::temp_dir().join(format!("xdplb-state{}", pin_dir.display().to_string().replace('/', "_")));
        cmd.arg("--runtime-socket").arg(dir.join("xdplb.sock"));
        cmd.arg("--state-file").arg(state_dir.join("server-state.json"));
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        let stderr = fs::File::create(&log)?;
        if let Some(j) = journal {
            use std::os::unix::fs::MetadataExt;
            let meta = stderr.metadata()?;
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
            cmd.env("XDPLB_JOURNAL_SOCKET", &j.socket);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("agent.out"))?)
            .stderr(stderr)
            .spawn()
            .context("starting xdplb")?;
        let mut agent = Agent { child, dir, pin_dir, config: cfg, log };
        // Under a journal, "ready:" goes to the journal's socket: the test waits for it there.
        // Start-up is mostly the kernel's verifier (about 2 s of CPU here, 3 s with IPv6
        // servers: the agent's "data path loaded" line), and a test that saturates both cores
        // with traffic (softirq time, not shared fairly) leaves it a fraction of one: it took
        // 25 s of 30 when it cost 5.5 s, hence 60.
        if journal.is_none() {
            agent.wait_log("ready:", 1, Duration::from_secs(60))?;
        }
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

    /// Writes an invalid configuration, sends SIGHUP, and expects the refusal in the log.
    pub fn reload_expect_refusal(&mut self, config: &str) -> Result<()> {
        let before = self.log_text().matches("reload refused").count();
        fs::write(&self.config, config)?;
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        self.wait_log("reload refused", before + 1, Duration::from_secs(10))
    }

    /// The agent's runtime API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("xdplb.sock")
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would: nothing is cleaned up, the pins stay.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the agent (SIGTERM) without removing its pins, as `systemctl restart` would.
    pub fn stop_keep_pins(mut self) -> PathBuf {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        // Released with the agent; the record of host changes stays for `detach` or the next agent.
        let _ = fs::remove_file(lb_user::host::service::run_file(&self.pin_dir, "lock", ""));
        std::mem::take(&mut self.pin_dir)
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
        if !self.pin_dir.as_os_str().is_empty() {
            remove_data_path(&self.pin_dir);
            let state_dir = std::env::temp_dir()
                .join(format!("xdplb-state{}", self.pin_dir.display().to_string().replace('/', "_")));
            let _ = fs::remove_dir_all(state_dir);
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.log.display(), self.log_text());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One line to a runtime API socket through `socat`, as operators script it; the answer.
pub fn socat(socket: &Path, line: &str) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("socat");
    c.args(["-t", "2", "stdio"]).arg(format!("unix-connect:{}", socket.display()));
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().expect("socat (Debian package socat)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{line}");
    }
    child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}
