//! The runtime API's socket: root-only, one line (commands separated by `;`) then close, or
//! `prompt` for an interactive session, as HAProxy's stats socket; and the CLI's client side.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// One command for the agent, with where to send its answer.
pub struct Request {
    pub line: String,
    pub reply: oneshot::Sender<String>,
}

/// Binds the socket, root-only, replacing a stale one (the agent holds the data path's lock).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Accepts connections until the process ends. Like HAProxy: one line (commands separated by
/// `;`) then close, or `prompt` for an interactive session.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Request>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, tx).await {
                log::debug!("runtime socket session: {e}");
            }
        });
    }
}

async fn session(stream: UnixStream, tx: mpsc::Sender<Request>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut interactive = false;
    while let Some(line) = lines.next_line().await? {
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
            let (reply, answer) = oneshot::channel();
            if tx.send(Request { line: cmd.to_string(), reply }).await.is_err() {
                return Ok(());
            }
            let text = answer.await.unwrap_or_default();
            w.write_all(text.as_bytes()).await?;
            // HAProxy ends every answer with an empty line.
            if !text.ends_with("\n\n") {
                w.write_all(b"\n").await?;
            }
        }
        if !interactive {
            break;
        }
        w.write_all(b"> ").await?;
    }
    w.shutdown().await
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
