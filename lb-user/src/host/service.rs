//! Living as a service: one agent per data path (a lock), and readiness for systemd
//! (`Type=notify`) without libsystemd.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, Write},
    os::{fd::AsRawFd, unix::fs::DirBuilderExt},
    path::{Path, PathBuf},
};

pub const RUN_DIR: &str = "/run/xdplb";

/// Held while the agent runs: a second agent for the same pin directory is refused.
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock for `pin_dir`, or says which process holds it.
pub fn lock(pin_dir: &Path) -> Result<Lock, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(RUN_DIR)
        .map_err(|e| format!("creating {RUN_DIR}: {e}"))?;
    let name = pin_dir.display().to_string().replace('/', "_");
    let path = Path::new(RUN_DIR).join(format!("lock{name}"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(format!(
            "another xdplb agent (pid {}) runs the data path pinned under {}; stop it first (one agent per data path)",
            holder.trim(),
            pin_dir.display()
        ));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(Lock { _file: file, path })
}

/// The capabilities the data path needs: refused early, naming what is missing, rather than
/// failing later with EPERM from deep inside the BPF loader.
pub fn check_privileges() -> Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Ok(()); // cannot tell: let the loader say what it says
    }
    let has = |cap: u32| d[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "xdplb run needs root, or the capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; missing: {}. Run it with sudo, or as the systemd unit (cargo xtask install)",
            missing.join(", ")
        ))
    }
}

/// Sends `state` (e.g. `READY=1`) to systemd when it started us with `Type=notify`.
pub fn notify(state: &str) -> io::Result<bool> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let path = path.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        }
        None => SocketAddr::from_pathname(&path)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
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
        // SAFETY of env mutation: this test is the only one touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!notify("READY=1").unwrap());
        let _ = fs::remove_dir_all(dir);
    }
}
