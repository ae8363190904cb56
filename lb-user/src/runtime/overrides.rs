//! What an operator sets by hand (state, weight, health checks), kept in a state file so that it
//! survives reloads and restarts (HAProxy loses it unless a state file is dumped by hand first).

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
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

impl Overrides {
    /// Reads the state file; a missing one means nothing was set.
    pub fn load(path: &Path) -> Result<Self, StateFileError> {
        match fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).map_err(|source| StateFileError::Parse { path: path.to_owned(), source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Overrides::default()),
            Err(source) => Err(StateFileError::Read { path: path.to_owned(), source }),
        }
    }

    /// Writes the state file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(tmp, path)
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
        fs::write(&path, "{not json").unwrap();
        assert!(Overrides::load(&path).unwrap_err().to_string().contains("fix or remove it"));
        let _ = fs::remove_dir_all(dir);
    }
}
