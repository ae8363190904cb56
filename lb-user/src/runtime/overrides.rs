//! What an operator sets by hand (state, weight, health checks), kept in a state file so that it
//! survives reloads and restarts (HAProxy loses it unless a state file is dumped by hand first).

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::AdminState;

/// A state file that cannot be read, or is not what xdplb writes.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{}: {source}; fix or remove it", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

/// What was set by hand, per `backend/server`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Overrides {
    pub servers: BTreeMap<String, ServerOverride>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<AdminState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_disabled: Option<bool>,
}

/// The most a state file may hold (a thousand servers' states take about 100 KiB).
const MAX_STATE_FILE: u64 = 16 << 20;

impl Overrides {
    /// Reads the state file; a missing one means nothing was set.
    pub fn load(path: &Path) -> Result<Self, StateFileError> {
        let read = fs::File::open(path).and_then(|f| {
            let mut text = String::new();
            io::Read::read_to_string(&mut io::Read::take(f, MAX_STATE_FILE), &mut text).map(|_| text)
        });
        match read {
            Ok(t) => serde_json::from_str(&t).map_err(|source| StateFileError::Parse { path: path.to_owned(), source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Overrides::default()),
            Err(source) => Err(StateFileError::Read { path: path.to_owned(), source }),
        }
    }

    /// Reads the state file at start: one that cannot be read or is not what xdplb writes (empty,
    /// cut short by a crash, garbage) is moved aside, said, and the agent starts without it,
    /// rather than not at all. Returns what was read and, if so, where the bad file went.
    pub fn load_or_set_aside(path: &Path) -> (Self, Option<(PathBuf, StateFileError)>) {
        match Self::load(path) {
            Ok(o) => (o, None),
            Err(e) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".bad-{stamp}"));
                let aside = PathBuf::from(aside);
                match fs::rename(path, &aside) {
                    Ok(()) => (Overrides::default(), Some((aside, e))),
                    Err(_) => (Overrides::default(), Some((path.to_owned(), e))),
                }
            }
        }
    }

    /// Writes the state file so that a power loss leaves either the old one or the new one,
    /// whole: a temporary file written and fsynced, renamed over it, the directory fsynced.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        use std::io::Write as _;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    }

    pub fn entry(&mut self, backend: &str, server: &str) -> &mut ServerOverride {
        self.servers.entry(format!("{backend}/{server}")).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_round_trip_through_the_state_file() {
        let dir = std::env::temp_dir().join(format!("xdplb-state-{}", std::process::id()));
        let path = dir.join("state.json");
        assert_eq!(Overrides::load(&path).unwrap(), Overrides::default());
        let mut o = Overrides::default();
        o.entry("etcd-cluster", "app1").state = Some(AdminState::Maint);
        o.entry("etcd-cluster", "app2").weight = Some(7);
        o.save(&path).unwrap();
        assert_eq!(Overrides::load(&path).unwrap(), o);
        assert!(!dir.join("state.json.tmp").exists(), "the temporary file was renamed");
        fs::write(&path, "{not json").unwrap();
        assert!(Overrides::load(&path).unwrap_err().to_string().contains("fix or remove it"));
        // At start, a bad file is moved aside and the agent goes on without it.
        for bad in ["", "{\"servers\": {\"etcd/app1\": {\"state\": \"ma", "\u{0}\u{1}garbage"] {
            fs::write(&path, bad).unwrap();
            let (o, aside) = Overrides::load_or_set_aside(&path);
            assert_eq!(o, Overrides::default());
            let (aside, _) = aside.expect("said");
            assert!(!path.exists() && fs::read_to_string(&aside).unwrap() == bad, "{bad:?} kept aside");
            fs::remove_file(aside).unwrap();
        }
        let _ = fs::remove_dir_all(dir);
    }
}
