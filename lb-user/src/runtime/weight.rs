//! `get weight`: HAProxy's `current (initial configured)` line.

use super::Refusal;
use crate::report::snapshot::Snapshot;

pub fn get_weight(s: &Snapshot, backend: &str, server: &str) -> Result<String, Refusal> {
    let b = s.backends.iter().find(|b| b.name == backend).ok_or(Refusal::NoSuchBackend)?;
    let sv = b.servers.iter().find(|sv| sv.name == server).ok_or(Refusal::NoSuchServer)?;
    Ok(format!("{} (initial {})\n", sv.weight, sv.initial_weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sample::snapshot;

    #[test]
    fn get_weight_is_current_and_initial() {
        let mut s = snapshot();
        s.backends[0].servers[0].initial_weight = 4;
        assert_eq!(get_weight(&s, "etcd-cluster", "app1").unwrap(), "2 (initial 4)\n");
        assert_eq!(get_weight(&s, "etcd-cluster", "nope").unwrap_err(), Refusal::NoSuchServer);
        assert_eq!(get_weight(&s, "nope", "app1").unwrap_err(), Refusal::NoSuchBackend);
    }
}
