//! What local clients reach: the status page and the runtime API sockets. They are bound before
//! the kernel is touched, then served by a thread of their own with its own runtime, so that
//! however many clients come and whatever they do, the checks and the map updates (on the
//! agent's runtime) never wait for them. Each server caps its clients from the file-descriptor
//! budget that leaves the checks theirs (`host::limits`).

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::mpsc;

use super::Refused;
use crate::{
    config::{group_id, Global},
    host::{limits::FdBudget, sockets},
    report::{http, snapshot::Snapshot},
    runtime::{self, Access, Request},
};

/// How often a taken status address is tried again.
const RETRY_STATS: Duration = Duration::from_secs(2);

/// The listeners, bound (as std sockets, handed to the local thread's runtime).
pub(super) struct Listeners {
    stats_addr: SocketAddr,
    stats: Option<std::net::TcpListener>,
    stats_policy: http::Policy,
    sockets: Vec<(std::os::unix::net::UnixListener, runtime::Policy)>,
}

fn bind_stats(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// Binds the status page and every runtime socket. A taken status address is a refusal only
/// with `global.stats_required`; otherwise the agent says who holds it and goes on without the
/// page, which it takes as soon as the address is free.
pub(super) fn bind(g: &Global, budget: &FdBudget) -> Result<Listeners, Refused> {
    let stats = match bind_stats(g.stats_bind) {
        Ok(l) => Some(l),
        Err(e) => {
            let holder = sockets::listener_of(g.stats_bind).map(|h| format!(", held by {h}")).unwrap_or_default();
            let what = format!("global.stats_bind {}: {e}{holder}", g.stats_bind);
            if g.stats_required {
                return Err(Refused(format!(
                    "{what}; free it or pick another address:port (global.stats_required = true)"
                )));
            }
            log::warn!(
                "{what}; running without the status page until the address is free (global.stats_required = true refuses to start instead)"
            );
            None
        }
    };
    let mut sockets = Vec::new();
    let max_sessions = budget.runtime_sessions;
    let admin = (g.runtime_socket.clone(), Access::ADMIN);
    let extra = g.runtime_sockets.iter().map(|s| {
        let access = Access { level: s.level, group: s.group.as_deref().and_then(group_id) };
        (s.path.clone(), access)
    });
    for (path, access) in std::iter::once(admin).chain(extra) {
        let l = runtime::bind(&path, access)
            .and_then(tokio::net::UnixListener::into_std)
            .map_err(|e| Refused(format!("runtime socket {}: {e}", path.display())))?;
        sockets.push((l, runtime::Policy { access, max_sessions }));
    }
    Ok(Listeners {
        stats_addr: g.stats_bind,
        stats,
        stats_policy: http::Policy { auth: g.stats_auth.clone(), max_clients: budget.status_clients },
        sockets,
    })
}

/// Serves them on a thread of their own until the process ends.
pub(super) fn serve(l: Listeners, tx: mpsc::Sender<Request>, shared: Arc<RwLock<Snapshot>>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("xdplb-local".into()).spawn(move || {
        rt.block_on(async move {
            for (listener, policy) in l.sockets {
                match tokio::net::UnixListener::from_std(listener) {
                    Ok(listener) => {
                        tokio::spawn(runtime::serve(listener, policy, tx.clone(), shared.clone()));
                    }
                    Err(e) => log::error!("runtime socket: {e}"),
                }
            }
            match l.stats.map(tokio::net::TcpListener::from_std) {
                Some(Ok(listener)) => http::serve(listener, shared, l.stats_policy).await,
                Some(Err(e)) => log::error!("status page: {e}"),
                None => loop {
                    tokio::time::sleep(RETRY_STATS).await;
                    if let Ok(listener) = bind_stats(l.stats_addr).and_then(tokio::net::TcpListener::from_std) {
                        log::info!("status page on http://{}/ now that the address is free", l.stats_addr);
                        http::serve(listener, shared, l.stats_policy).await;
                        break;
                    }
                },
            }
            std::future::pending::<()>().await;
        });
    })?;
    Ok(())
}
