//! The runtime API's sockets: each at a level (`levels`), one line (commands separated by `;`) then close, or
//! `prompt` for an interactive session, as HAProxy's stats socket; and the CLI's client side.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
    time::timeout,
};

use super::{levels::Access, Command};
use crate::{host::limits, report::snapshot::Snapshot};

/// One command for the agent, with where to send its answer.
pub struct Request {
    pub line: String,
    pub reply: oneshot::Sender<String>,
}

/// The longest command line (HAProxy's is its buffer, 16 KiB).
const MAX_LINE: usize = 16 * 1024;
/// A one-shot client has this long to send its line; an interactive one (`prompt`) this long
/// between lines (HAProxy's `stats timeout` is 10 s).
const LINE_DEADLINE: Duration = Duration::from_secs(10);
const PROMPT_IDLE: Duration = Duration::from_mins(1);
/// And this long to take each answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Binds the socket, replacing a stale one (the agent holds the data path's lock): root only
/// (0600 in a 0700 directory), or, for a socket a group may use, open to connect (0666 in a
/// directory others may traverse) with the caller's credentials checked on every connection.
pub fn bind(path: &Path, access: Access) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        let mode = if access.group.is_some() { 0o711 } else { 0o700 };
        fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
        if access.group.is_some() {
            let now = fs::metadata(dir)?.permissions().mode();
            if now & 0o011 != 0o011 {
                fs::set_permissions(dir, fs::Permissions::from_mode(now | 0o011))?;
                log::info!(
                    "{}: made traversable (mode {:04o}) for the socket's group",
                    dir.display(),
                    (now | 0o011) & 0o7777
                );
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    let mode = if access.group.is_some() { 0o666 } else { 0o600 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(l)
}

/// How one socket is served.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub access: Access,
    /// Sessions at once; more are told so and closed.
    pub max_sessions: usize,
}

/// Accepts connections until the process ends. Like HAProxy: one line (commands separated by
/// `;`) then close, or `prompt` for an interactive session. Reading commands are answered here
/// from the latest snapshot; changes go to the agent (`tx`), at the socket's level only.
pub async fn serve(listener: UnixListener, policy: Policy, tx: mpsc::Sender<Request>, shared: Arc<RwLock<Snapshot>>) {
    let slots = Arc::new(Semaphore::new(policy.max_sessions));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::debug!("runtime socket: accept: {e}");
                tokio::time::sleep(limits::accept_pause(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Said without waiting: a client that does not read gets nothing more.
            let _ = stream.try_write(b"Too many sessions, try again.\n\n");
            continue;
        };
        let (tx, shared) = (tx.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = session(stream, policy.access, tx, &shared).await {
                log::debug!("runtime socket session: {e}");
            }
            drop(slot);
        });
    }
}

/// One line, at most `MAX_LINE` bytes; `None` at the end of the stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX).saturating_add(1);
    let n = r.take(limit).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "command line too long"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_owned()))
}

async fn session(
    stream: UnixStream,
    access: Access,
    tx: mpsc::Sender<Request>,
    shared: &RwLock<Snapshot>,
) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let (mut r, mut w) = stream.into_split();
    if !access.admits(cred.uid(), cred.gid()) {
        log::warn!("runtime socket: uid {} gid {} (pid {:?}) refused", cred.uid(), cred.gid(), cred.pid());
        let _ = timeout(WRITE_DEADLINE, w.write_all(b"Permission denied\n\n")).await;
        let _ = w.shutdown().await;
        // What the caller was sending is read and dropped (briefly, and bounded), so that it
        // gets the answer rather than a broken pipe.
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let _ =
            timeout(Duration::from_secs(1), tokio::io::copy(&mut (&mut r).take(limit), &mut tokio::io::sink())).await;
        return Ok(());
    }
    let mut r = BufReader::new(r);
    let mut interactive = false;
    loop {
        let wait = if interactive { PROMPT_IDLE } else { LINE_DEADLINE };
        let line = match timeout(wait, read_line(&mut r)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) => {
                let _ = timeout(WRITE_DEADLINE, w.write_all(format!("{e}\n\n").as_bytes())).await;
                return Ok(());
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(line))) => line,
        };
        for cmd in line.split(';').map(str::trim) {
            match cmd {
                "prompt" => {
                    interactive = true;
                    continue;
                }
                "quit" => return Ok(()),
                "" if interactive => continue,
                _ => {}
            }
            let Some(text) = answer(cmd, access, &tx, shared).await else { return Ok(()) };
            // HAProxy ends every answer with an empty line.
            let end: &[u8] = if text.ends_with("\n\n") { b"" } else { b"\n" };
            let write = async {
                w.write_all(text.as_bytes()).await?;
                w.write_all(end).await
            };
            timeout(WRITE_DEADLINE, write).await.map_err(|_| io::ErrorKind::TimedOut)??;
        }
        if !interactive {
            break;
        }
        timeout(WRITE_DEADLINE, w.write_all(b"> ")).await.map_err(|_| io::ErrorKind::TimedOut)??;
    }
    w.shutdown().await
}

/// The answer to one command: refused below the socket's level, read from the snapshot, or
/// carried out by the agent. `None`: the agent is gone.
async fn answer(cmd: &str, access: Access, tx: &mpsc::Sender<Request>, shared: &RwLock<Snapshot>) -> Option<String> {
    let parsed = match super::parse(cmd) {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    if parsed.level() > access.level {
        return Some("Permission denied\n".into());
    }
    if parsed.reads_only() {
        let snap = shared.read().unwrap_or_else(PoisonError::into_inner).clone();
        return Some(read(&parsed, &snap));
    }
    let (reply, answer) = oneshot::channel();
    tx.send(Request { line: cmd.to_string(), reply }).await.ok()?;
    Some(answer.await.unwrap_or_default())
}

/// The answer to a reading command (`Command::reads_only`), from the snapshot alone.
pub fn read(cmd: &Command, snap: &Snapshot) -> String {
    use super::{info, servers_state, stat, weight, HELP};
    match cmd {
        Command::ShowInfo => info::show_info(snap, &crate::host::hostname().unwrap_or_default()),
        Command::ShowStat(filter) => stat::show_stat(snap, filter),
        Command::GetWeight { backend, server } => {
            weight::get_weight(snap, backend, server).unwrap_or_else(|e| e.to_string())
        }
        Command::ShowServersState(b) => {
            servers_state::show_servers_state(snap, b.as_deref()).unwrap_or_else(|e| e.to_string())
        }
        Command::Help => HELP.into(),
        _ => String::new(),
    }
}

/// The agent's socket did not answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "cannot reach the agent at {}: {source}; is `xdplb run` running (global.runtime_socket)?",
        socket.display()
    )]
    Connect { socket: PathBuf, source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Sends one line to the agent's socket and returns its answer (the CLI's side).
pub fn call(socket: &Path, line: &str) -> Result<String, CallError> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|source| CallError::Connect { socket: socket.to_owned(), source })?;
    writeln!(s, "{line}")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
