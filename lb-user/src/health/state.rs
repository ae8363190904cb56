//! HAProxy's health state machine for one server: a health counter from 0 to rise+fall-1, the
//! server UP at or above `rise`, with HAProxy's hysteresis; and a server's state as the agent
//! reports it, with HAProxy's words for it (`UP 2/3`, `DOWN 1/2`, `MAINT`, ...), in one place.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::InitialState;

/// What a server does with new flows, and why.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServerState {
    #[default]
    Up,
    /// UP, failing checks (`UP x/fall`).
    GoingDown,
    Down,
    /// DOWN, passing checks (`DOWN x/rise`).
    GoingUp,
    /// Administratively off: no new flows, no checks.
    Maint,
    /// No new flows, open flows stay, checks go on.
    Drain,
    /// Not checked: counts as UP.
    NoCheck,
}

/// A checked server's health counter: UP at or above `rise`, fully UP at `rise + fall - 1`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthCounts {
    pub health: u32,
    pub rise: u32,
    pub fall: u32,
}

impl ServerState {
    /// Whether the server may take new flows.
    pub fn takes_flows(self) -> bool {
        matches!(self, ServerState::Up | ServerState::GoingDown | ServerState::NoCheck)
    }

    /// What it does with new flows, in HAProxy's words: `UP`, `DOWN`, `MAINT` or `DRAIN`
    /// (HAProxy has no word for going up or down, nor for an unchecked server, which is UP).
    pub fn flow_word(self) -> &'static str {
        match self {
            ServerState::Up | ServerState::GoingDown | ServerState::NoCheck => "UP",
            ServerState::Down | ServerState::GoingUp => "DOWN",
            ServerState::Maint => "MAINT",
            ServerState::Drain => "DRAIN",
        }
    }

    /// HAProxy's status column: `UP`, `UP 2/3` (checks left before DOWN), `DOWN`, `DOWN 1/2`
    /// (passes so far towards UP), `MAINT`, `DRAIN`, `no check`.
    pub fn status(self, counts: Option<HealthCounts>) -> String {
        match (self, counts) {
            (ServerState::GoingDown, Some(h)) => format!("UP {}/{}", (h.health + 1).saturating_sub(h.rise), h.fall),
            (ServerState::GoingUp, Some(h)) => format!("DOWN {}/{}", h.health, h.rise),
            (ServerState::NoCheck, _) => "no check".into(),
            (state, _) => state.flow_word().into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

#[derive(Debug, Clone)]
#[expect(clippy::struct_field_names, reason = "HAProxy calls the counter `health` too")]
pub struct Health {
    rise: u32,
    fall: u32,
    health: u32,
    up: bool,
    since: Instant,
    pub check_failures: u64,
    pub down_transitions: u64,
    downtime: Duration,
}

impl Health {
    /// `Up` starts like HAProxy: UP with health = rise, so the first failed check marks the
    /// server DOWN ("up, but will fall down at first failure"); `Down` waits for `rise` passes.
    pub fn new(rise: u32, fall: u32, initial: InitialState, now: Instant) -> Self {
        let (health, up) = match initial {
            InitialState::Up => (rise, true),
            InitialState::Down => (0, false),
        };
        Health { rise, fall, health, up, since: now, check_failures: 0, down_transitions: 0, downtime: Duration::ZERO }
    }

    /// A server whose state a previous agent left in the kernel: fully UP, or DOWN.
    pub fn adopted(rise: u32, fall: u32, up: bool, now: Instant) -> Self {
        let mut h = Health::new(rise, fall, if up { InitialState::Up } else { InitialState::Down }, now);
        if up {
            h.health = h.max();
        }
        h
    }

    fn max(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// Feeds one check result; returns the transition it caused, if any.
    pub fn record(&mut self, passed: bool, now: Instant) -> Option<Transition> {
        if passed {
            if self.health < self.max() {
                self.health += 1;
            }
            if !self.up && self.health >= self.rise {
                self.up = true;
                self.health = self.max();
                self.downtime += now - self.since;
                self.since = now;
                return Some(Transition::Up);
            }
        } else {
            self.check_failures += 1;
            if self.up && self.health > self.rise {
                self.health -= 1;
            } else if self.up {
                self.up = false;
                self.health = 0;
                self.down_transitions += 1;
                self.since = now;
                return Some(Transition::Down);
            } else {
                self.health = 0;
            }
        }
        None
    }

    /// Sets the state outright (reload with new rise/fall keeps UP/DOWN).
    pub fn rescale(&mut self, rise: u32, fall: u32) {
        self.rise = rise;
        self.fall = fall;
        self.health = if self.up { self.max() } else { 0 };
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn state(&self) -> ServerState {
        match (self.up, self.health) {
            (true, h) if h < self.max() && h >= self.rise && self.max() > self.rise => ServerState::GoingDown,
            (true, _) => ServerState::Up,
            (false, 0) => ServerState::Down,
            (false, _) => ServerState::GoingUp,
        }
    }

    /// The counter, for the status page and HAProxy's formats.
    pub fn counts(&self) -> HealthCounts {
        HealthCounts { health: self.health, rise: self.rise, fall: self.fall }
    }

    /// HAProxy's status column for this counter (`UP 2/3`, `DOWN 1/2`, ...).
    pub fn status(&self) -> String {
        self.state().status(Some(self.counts()))
    }

    /// When the next check is due: `inter` while steadily UP, `fastinter` while changing state,
    /// `downinter` while steadily DOWN (HAProxy's rules).
    pub fn interval(&self, inter: Duration, fastinter: Duration, downinter: Duration) -> Duration {
        match self.state() {
            ServerState::Up => inter,
            ServerState::Down => downinter,
            _ => fastinter,
        }
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    /// Time spent DOWN, including the current stretch.
    pub fn downtime(&self, now: Instant) -> Duration {
        if self.up {
            self.downtime
        } else {
            self.downtime + (now - self.since)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Health, results: &str) -> Vec<(String, Option<Transition>)> {
        let now = Instant::now();
        results.chars().map(|c| (h.record(c == '+', now), h.status())).map(|(t, s)| (s, t)).collect()
    }

    #[test]
    fn fall_checks_take_an_up_server_down_with_haproxy_wording() {
        let mut h = Health::new(2, 3, InitialState::Down, Instant::now());
        assert_eq!(run(&mut h, "++"), vec![("DOWN 1/2".into(), None), ("UP".into(), Some(Transition::Up))]);
        assert_eq!(
            run(&mut h, "---"),
            vec![("UP 2/3".into(), None), ("UP 1/3".into(), None), ("DOWN".into(), Some(Transition::Down))]
        );
        assert_eq!(h.down_transitions, 1);
        assert_eq!(h.check_failures, 3);
    }

    #[test]
    fn a_pass_restores_full_health_and_a_failure_resets_rise() {
        let mut h = Health::new(2, 3, InitialState::Down, Instant::now());
        run(&mut h, "++--+");
        assert_eq!(h.status(), "UP 2/3", "a pass while going down climbs back one step");
        run(&mut h, "+");
        assert_eq!(h.status(), "UP");
        run(&mut h, "---");
        assert_eq!(h.status(), "DOWN");
        run(&mut h, "+-+");
        assert_eq!(h.status(), "DOWN 1/2", "a failure while going up starts over");
    }

    #[test]
    fn initial_up_falls_at_the_first_failure_like_haproxy() {
        let mut h = Health::new(2, 3, InitialState::Up, Instant::now());
        assert!(h.is_up());
        assert_eq!(run(&mut h, "-"), vec![("DOWN".into(), Some(Transition::Down))]);
        let mut h = Health::new(2, 3, InitialState::Up, Instant::now());
        assert_eq!(h.status(), "UP 1/3", "HAProxy shows the starting server one failure from DOWN");
        run(&mut h, "++");
        assert_eq!(h.status(), "UP", "passes bring it to full health");
        assert_eq!(run(&mut h, "--"), vec![("UP 2/3".into(), None), ("UP 1/3".into(), None)]);
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut h = Health::new(1, 1, InitialState::Down, Instant::now());
        assert_eq!(
            run(&mut h, "+-+"),
            vec![
                ("UP".into(), Some(Transition::Up)),
                ("DOWN".into(), Some(Transition::Down)),
                ("UP".into(), Some(Transition::Up)),
            ]
        );
    }

    #[test]
    fn intervals_follow_the_state() {
        let (i, f, d) = (Duration::from_secs(2), Duration::from_millis(500), Duration::from_secs(5));
        let mut h = Health::new(2, 3, InitialState::Down, Instant::now());
        assert_eq!(h.interval(i, f, d), d);
        run(&mut h, "+");
        assert_eq!(h.interval(i, f, d), f);
        run(&mut h, "+");
        assert_eq!(h.interval(i, f, d), i);
        run(&mut h, "-");
        assert_eq!(h.interval(i, f, d), f);
    }

    #[test]
    fn flapping_every_check_never_transitions_with_rise_2_fall_3() {
        // A server that alternates pass/fail: from UP it never loses 3 in a row, so it stays UP;
        // from DOWN it never passes 2 in a row, so it stays DOWN. Hysteresis, no flapping.
        let mut up = Health::new(2, 3, InitialState::Down, Instant::now());
        run(&mut up, "++");
        let t: Vec<_> = run(&mut up, &"-+".repeat(20)).into_iter().filter_map(|(_, t)| t).collect();
        assert!(t.is_empty(), "{t:?}");
        let mut down = Health::new(2, 3, InitialState::Down, Instant::now());
        let t: Vec<_> = run(&mut down, &"+-".repeat(20)).into_iter().filter_map(|(_, t)| t).collect();
        assert!(t.is_empty(), "{t:?}");
    }
}
