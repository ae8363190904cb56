//! Living as a service: one agent per data path (a lock), the privileges it needs, and
//! readiness for systemd (`Type=notify`) without libsystemd.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use caps::{CapSet, Capability};

pub const RUN_DIR: &str = "/run/xdplb";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("creating {RUN_DIR}: {0}")]
    RunDir(io::Error),
    #[error("{}: {source}", path.display())]
    LockFile { path: PathBuf, source: io::Error },
    #[error(
        "another xdplb agent (pid {holder}) runs the data path pinned under {}; stop it first (one agent per data path)",
        pin_dir.display()
    )]
    Taken { holder: String, pin_dir: PathBuf },
    #[error(
        "xdplb run needs root, or the capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; missing: {}. Run it with sudo, or as the systemd unit (cargo xtask install)",
        missing.join(", ")
    )]
    MissingCapabilities { missing: Vec<&'static str> },
}

/// Held while the agent runs: a second agent for the same pin directory is refused.
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// The file under `RUN_DIR` that holds `what` for the data path pinned under `pin_dir`
/// (`lock_sys_fs_bpf_xdplb`, `host-changes_sys_fs_bpf_xdplb.json`).
pub fn run_file(pin_dir: &Path, what: &str, ext: &str) -> PathBuf {
    let name = pin_dir.display().to_string().replace('/', "_");
    Path::new(RUN_DIR).join(format!("{what}{name}{ext}"))
}

/// Takes the lock for `pin_dir`, or says which process holds it.
pub fn lock(pin_dir: &Path) -> Result<Lock, ServiceError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(RUN_DIR).map_err(ServiceError::RunDir)?;
    let path = run_file(pin_dir, "lock", "");
    let file_error = |source| ServiceError::LockFile { path: path.clone(), source };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(file_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(ServiceError::Taken { holder: holder.trim().to_owned(), pin_dir: pin_dir.to_owned() });
        }
        Err(TryLockError::Error(e)) => return Err(file_error(e)),
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(Lock { _file: file, path })
}

/// The capabilities the data path needs: refused early, naming what is missing, rather than
/// failing later with EPERM from deep inside the BPF loader.
pub fn check_privileges() -> Result<(), ServiceError> {
    let Ok(effective) = caps::read(None, CapSet::Effective) else {
        return Ok(()); // cannot tell: let the loader say what it says
    };
    let has = |cap| effective.contains(&cap);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(Capability::CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !has(Capability::CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::MissingCapabilities { missing })
    }
}

/// Sends `state` (e.g. `READY=1`) to systemd when it started us with `Type=notify`.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&path.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

/// How often systemd wants `WATCHDOG=1` (half its `WatchdogSec`), if it watches this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// Sends `state` to the socket at `path` (`@name` for an abstract one).
fn notify_to(path: &str, state: &str) -> io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_socket_and_is_silent_without_one() {
        let dir = std::env::temp_dir().join(format!("xdplb-notify-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_to(&path.to_string_lossy(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = fs::remove_dir_all(dir);
        // Not started by systemd (the test runner is not): nothing to tell, nothing sent.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify("READY=1").unwrap());
        }
    }
}
