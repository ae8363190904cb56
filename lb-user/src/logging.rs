//! Where the agent's log lines go. On a terminal or in a file: `env_logger`'s lines, as always.
//! Under systemd, whose journal holds stderr (`JOURNAL_STREAM` names stderr's device and inode,
//! systemd.exec(5)): each record goes to the journal's native socket with its priority and its
//! structured fields (`SERVER`, `BACKEND`, ... from the record's key-values), so that
//! `journalctl -p warning` shows a DOWN and `journalctl SERVER=pool/app1` a server's story; if
//! the socket takes nothing, the line goes to stderr with sd-daemon(3)'s `<N>` prefix, which
//! journald reads as the priority.
//!
//! Priorities follow HAProxy's alert levels: a server DOWN is `warning` (4), a backend with no
//! server left `crit` (2), a server UP `notice` (5); a record says so with a `priority`
//! key-value, otherwise its level decides (error 3, warn 4, info 6, debug and trace 7).

use std::{
    fmt::Write as _,
    io::Write as _,
    os::unix::{fs::MetadataExt, net::UnixDatagram},
    path::PathBuf,
};

use log::{kv, Level, Log, Metadata, Record};

/// journald's native protocol socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Another socket (tests, or a journal relay).
const SOCKET_ENV: &str = "XDPLB_JOURNAL_SOCKET";

/// Installs the logger: the journal's when stderr is the journal, `env_logger`'s otherwise.
/// `RUST_LOG` filters both (default `info`).
pub fn init() {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    if !stderr_is_journal() {
        let max = inner.filter();
        if log::set_boxed_logger(Box::new(inner)).is_ok() {
            log::set_max_level(max);
        }
        return;
    }
    let socket = std::env::var_os(SOCKET_ENV).map_or_else(|| PathBuf::from(JOURNAL_SOCKET), PathBuf::from);
    let logger = Journal { filter: inner, socket, datagram: UnixDatagram::unbound().ok() };
    let max = logger.filter.filter();
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (`device:inode`): a child whose stderr
/// was redirected elsewhere inherits the variable but not the stream.
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var("JOURNAL_STREAM").ok() else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    want.trim() == format!("{}:{}", meta.dev(), meta.ino())
}

struct Journal {
    /// `RUST_LOG`'s filter.
    filter: env_logger::Logger,
    socket: PathBuf,
    datagram: Option<UnixDatagram>,
}

/// syslog(3)'s priority of a record: its `priority` key-value, or its level's.
pub fn priority(record: &Record<'_>) -> u8 {
    let given = record.key_values().get(kv::Key::from_str("priority")).and_then(|v| v.to_u64());
    match given.and_then(|p| u8::try_from(p).ok()).filter(|p| *p <= 7) {
        Some(p) => p,
        None => match record.level() {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        },
    }
}

/// A record's key-values as journal fields: `SERVER=pool/app1` (names upper-cased, anything
/// but letters, digits and `_` made `_`); `priority` is the entry's own.
fn fields(record: &Record<'_>) -> Vec<(String, String)> {
    struct Collect(Vec<(String, String)>);
    impl<'kvs> kv::VisitSource<'kvs> for Collect {
        fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
            let name: String = key
                .as_str()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                .collect();
            if name != "PRIORITY" && name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                self.0.push((name, value.to_string()));
            }
            Ok(())
        }
    }
    let mut c = Collect(Vec::new());
    let _ = record.key_values().visit(&mut c);
    c.0
}

/// One entry in the native protocol: `KEY=value\n`, or, for a value with a line break,
/// `KEY\n`, its length as 64-bit little endian, the value, `\n`.
pub fn entry(message: &str, priority: u8, target: &str, fields: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    let mut field = |key: &str, value: &str| {
        if value.contains('\n') {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    };
    field("MESSAGE", message);
    field("PRIORITY", &priority.to_string());
    field("SYSLOG_IDENTIFIER", "xdplb");
    field("CODE_MODULE", target);
    for (k, v) in fields {
        field(k, v);
    }
    out
}

impl Log for Journal {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let message = record.args().to_string();
        let priority = priority(record);
        let sent = self.datagram.as_ref().is_some_and(|d| {
            let entry = entry(&message, priority, record.target(), &fields(record));
            d.send_to(&entry, &self.socket).is_ok()
        });
        if !sent {
            // One line per record: continuation lines would lose the prefix.
            let mut line = String::with_capacity(message.len() + 4);
            let _ = write!(line, "<{priority}>{}", message.replace('\n', " "));
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_and_fields() {
        let args = format_args!("Server pool/app1 is DOWN");
        let kvs: &[(&str, &str)] = &[("server", "pool/app1"), ("backend", "pool")];
        let r = Record::builder().level(Level::Warn).args(args).key_values(&kvs).build();
        assert_eq!(priority(&r), 4);
        assert_eq!(fields(&r), [("SERVER".into(), "pool/app1".into()), ("BACKEND".into(), "pool".into())]);
        let kvs: &[(&str, u64)] = &[("priority", 5)];
        let r = Record::builder().level(Level::Info).args(format_args!("up")).key_values(&kvs).build();
        assert_eq!((priority(&r), fields(&r).len()), (5, 0));
        let r = Record::builder().level(Level::Info).args(format_args!("x")).build();
        assert_eq!(priority(&r), 6);
        let e = entry("a\nb", 4, "xdplb::agent", &[("SERVER".into(), "p/s".into())]);
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nPRIORITY=4\nSYSLOG_IDENTIFIER=xdplb\nCODE_MODULE=xdplb::agent\nSERVER=p/s\n");
        assert_eq!(e, want);
    }
}
