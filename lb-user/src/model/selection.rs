//! Which servers take new flows, and in what order: HAProxy's rule for backups, and weights
//! turned into round-robin slots for the kernel's backend set.

use lb_common::{BackendSet, MAX_SLOTS};

use super::topology::Pool;

impl Pool {
    /// The set that takes new flows: the UP active servers, or, when none is UP, the UP backups
    /// (HAProxy's rule). Weights become interleaved round-robin slots.
    #[expect(clippy::cast_possible_truncation, reason = "at most MAX_SLOTS slots")]
    #[expect(clippy::indexing_slicing, reason = "weighted_slots makes at most MAX_SLOTS slots, the array's size")]
    pub fn backend_set(&self, is_up: &dyn Fn(u32) -> bool) -> BackendSet {
        let pick = |backup: bool| -> Vec<(u32, u32)> {
            self.servers
                .iter()
                .filter(|s| s.backup == backup && s.weight > 0 && is_up(s.id))
                .map(|s| (s.id, s.weight))
                .collect()
        };
        let mut members = pick(false);
        if members.is_empty() {
            members = pick(true);
        }
        let slots = weighted_slots(&members);
        let mut set = BackendSet { count: slots.len() as u32, ..BackendSet::default() };
        set.slots[..slots.len()].copy_from_slice(&slots);
        set
    }
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
}
