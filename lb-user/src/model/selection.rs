//! Which servers take new flows, and how the kernel picks among them: HAProxy's rule for
//! backups, weights turned into slots, and the slot table of each balance algorithm.

use lb_common::{BackendSet, BALANCE_LEASTCONN, BALANCE_ROUNDROBIN, BALANCE_SOURCE, MAX_SLOTS};

use super::topology::Pool;
use crate::config::Balance;

impl Pool {
    /// The kernel's set for new flows: the UP active servers, or, when none is UP, the first UP
    /// backup (all of them with `allbackups`), HAProxy's rule. `is_up` is the health and
    /// administrative verdict.
    pub fn backend_set(&self, is_up: &dyn Fn(u32) -> bool) -> BackendSet {
        self.set_among(None, is_up)
    }

    /// The kernel's set for new flows of one family (`v6`: IPv6, the set at `id +
    /// lb_common::POOL_V6`; otherwise IPv4, at `id`): `backend_set`'s rule among that family's
    /// servers only (no translation between families), so the backups of a family take over
    /// when none of its active servers is UP.
    pub fn backend_set_of(&self, v6: bool, is_up: &dyn Fn(u32) -> bool) -> BackendSet {
        self.set_among(Some(v6), is_up)
    }

    #[expect(clippy::cast_possible_truncation, reason = "at most MAX_SLOTS slots, weights at most 256")]
    fn set_among(&self, v6: Option<bool>, is_up: &dyn Fn(u32) -> bool) -> BackendSet {
        let members = |backup: bool, up: bool| -> Vec<(u32, u32)> {
            self.servers
                .iter()
                .filter(|s| v6.is_none_or(|v6| s.addr.is_ipv6() == v6))
                .filter(|s| s.backup == backup && s.weight > 0 && (!up || is_up(s.id)))
                .map(|s| (s.id, s.weight))
                .collect()
        };
        let mut backup = false;
        let mut up = members(false, true);
        if up.is_empty() {
            backup = true;
            up = members(true, true);
            if !self.allbackups {
                up.truncate(1);
            }
        }
        let mut set = BackendSet {
            retries: self.retries,
            suspect_after: self.suspect_after,
            balance: match self.balance {
                Balance::Roundrobin => BALANCE_ROUNDROBIN,
                Balance::Leastconn => BALANCE_LEASTCONN,
                Balance::Source => BALANCE_SOURCE,
            },
            ..BackendSet::default()
        };
        let slots: Vec<(u32, u32)> = match self.balance {
            Balance::Roundrobin => weighted_slots(&up).into_iter().map(|id| (id, 0)).collect(),
            Balance::Leastconn => up.iter().take(MAX_SLOTS).copied().collect(),
            Balance::Source if up.is_empty() => Vec::new(),
            Balance::Source => {
                let all = if backup && !self.allbackups { up.clone() } else { members(backup, false) };
                stable_slots(&all, &up).into_iter().map(|id| (id, 0)).collect()
            }
        };
        set.count = slots.len() as u32;
        for ((slot, weight), (id, w)) in set.slots.iter_mut().zip(set.weights.iter_mut()).zip(slots) {
            *slot = id;
            *weight = w as u16;
        }
        set
    }
}

/// `balance source`: the slots of every configured server (`all`, by weight), each slot of a
/// server that is not UP given to an UP one (`up`) in turn. A client's hash picks a slot; while
/// its server is UP the slot is the same, whatever happens to the others.
pub fn stable_slots(all: &[(u32, u32)], up: &[(u32, u32)]) -> Vec<u32> {
    if up.is_empty() {
        return Vec::new();
    }
    let mut replacements = weighted_slots(up).into_iter().cycle();
    weighted_slots(all)
        .into_iter()
        .map(|id| if up.iter().any(|&(u, _)| u == id) { id } else { replacements.next().unwrap_or(id) })
        .collect()
}

/// Smooth weighted round-robin (each server appears weight/gcd times, spread out), at most
/// MAX_SLOTS slots; weights are scaled down proportionally when they would not fit.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "weights and slot counts are bounded by MAX_SLOTS"
)]
#[expect(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "indexes range over `weights`, `current` and `members`, which have one element per member (and at least one)"
)]
pub fn weighted_slots(members: &[(u32, u32)]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if members.is_empty() {
        return Vec::new();
    }
    let g = members.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let mut weights: Vec<u32> = members.iter().map(|&(_, w)| w / g).collect();
    let total: u32 = weights.iter().sum();
    if total as usize > MAX_SLOTS {
        weights =
            weights.iter().map(|&w| ((u64::from(w) * MAX_SLOTS as u64 / u64::from(total)) as u32).max(1)).collect();
        while weights.iter().sum::<u32>() as usize > MAX_SLOTS {
            let i = weights.iter().enumerate().max_by_key(|(_, w)| **w).unwrap().0;
            weights[i] -= 1;
        }
    }
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(&weights) {
            *c += i64::from(w);
        }
        let best = (0..current.len()).max_by_key(|&i| (current[i], -(i as i64))).unwrap();
        current[best] -= total;
        out.push(members[best].0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_interleaved_and_bounded() {
        assert_eq!(weighted_slots(&[(1, 1), (2, 1), (3, 1)]), vec![1, 2, 3]);
        assert_eq!(weighted_slots(&[(1, 10), (2, 10)]), vec![1, 2]);
        let s = weighted_slots(&[(1, 2), (2, 1)]);
        assert_eq!(s, vec![1, 2, 1]);
        let s = weighted_slots(&[(1, 256), (2, 255), (3, 1)]);
        assert!(s.len() <= MAX_SLOTS && s.contains(&3));
        let ones = s.iter().filter(|&&x| x == 1).count();
        let twos = s.iter().filter(|&&x| x == 2).count();
        assert!(ones.abs_diff(twos) <= 2, "{ones} vs {twos}");
    }

    #[test]
    fn source_slots_keep_every_up_server_in_place() {
        let all = [(1, 1), (2, 1), (3, 1)];
        assert_eq!(stable_slots(&all, &all), vec![1, 2, 3]);
        // app2 DOWN: its slot goes to another; app1's and app3's stay where they were.
        let s = stable_slots(&all, &[(1, 1), (3, 1)]);
        assert_eq!((s[0], s[2]), (1, 3));
        assert_ne!(s[1], 2);
        assert!(stable_slots(&all, &[]).is_empty());
    }
}
