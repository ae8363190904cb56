//! Packet fixtures as tables, Katran-style. A [`Case`] is one row: a description, the input
//! frame, the expected XDP action and the expected output frame (byte for byte, or the input
//! unchanged), and optionally the counters the row moves and the flow states it leaves. [`run`]
//! plays a table in order through BPF_PROG_TEST_RUN on one loaded program and asserts every
//! column of every row.
//!
//! A scenario (handshake, data, close) is one table. What only the program knows (the server and
//! NAT port it picked, the TSval it sent) is captured from an output frame into [`Seen`] and used
//! by later rows: an input frame, an expected frame or a flow key may be [`later`], a closure
//! over what has been seen so far.
//!
//! IPv6 rows are the same rows: their frames are `Tcp<Ipv6Addr>`'s, their new flows are
//! captured by [`Case::opens6`] into `Seen::flows6`, their flow states asserted by
//! [`Case::flow6`].

use std::net::Ipv6Addr;

use lb_common::{tcp::ts_clock, Event, FlowKey, FlowKey6, Reason};
use lb_user::dataplane::flows::{monotonic_ns, FlowState};

use crate::{
    fixture::{Loaded, Nat, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{self, Tcp},
};

/// What the rows of a table captured for the rows after them.
#[derive(Debug, Default)]
pub struct Seen {
    /// The flows the rows marked [`Case::opens`] opened, in order (from their rewritten SYNs).
    pub flows: Vec<Nat>,
    /// The IPv6 flows the rows marked [`Case::opens6`] opened, in order.
    pub flows6: Vec<Nat<Ipv6Addr>>,
    /// The TSval the last of those SYNs left with, if it carried Linux's SYN options (else 0).
    pub tsval: u32,
    /// The timestamp clock (`ts_clock`) just before and just after the last of those SYNs.
    pub clock: (u32, u32),
}

impl Seen {
    /// Asserts that the last SYN's TSval is the tuple's clock (taken while the SYN ran) plus
    /// `hash`, the tuple's secret hash: never the client's own clock.
    pub fn assert_tuple_clock(&self, hash: u32) {
        let clock = self.tsval.wrapping_sub(hash);
        let (before, after) = self.clock;
        assert!(
            clock.wrapping_sub(before) <= after.wrapping_sub(before),
            "TSval {:#x} = clock {clock} + hash, clock in {before}..={after}",
            self.tsval
        );
    }
}

/// A value known when the table is written, or built from what was seen when its row runs.
pub enum Val<'a, T> {
    Now(T),
    Later(Box<dyn Fn(&Seen) -> T + 'a>),
}

/// A value built from what earlier rows (and this row's own capture) saw.
pub fn later<'a, T>(f: impl Fn(&Seen) -> T + 'a) -> Val<'a, T> {
    Val::Later(Box::new(f))
}

impl<T: Clone> Val<'_, T> {
    fn get(&self, seen: &Seen) -> T {
        match self {
            Val::Now(v) => v.clone(),
            Val::Later(f) => f(seen),
        }
    }
}

impl<T> From<T> for Val<'_, T> {
    fn from(v: T) -> Self {
        Val::Now(v)
    }
}

/// The frame the program must hand back.
pub enum Out<'a> {
    /// The input, byte for byte.
    Unchanged,
    /// This frame, byte for byte (and so with valid checksums: the builders compute them in full).
    Frame(Val<'a, Vec<u8>>),
}

/// This frame, byte for byte.
pub fn exact<'a>(frame: Vec<u8>) -> Out<'a> {
    Out::Frame(Val::Now(frame))
}

/// The frame `f` builds from what was seen (this row's own capture included), byte for byte.
pub fn exact_later<'a>(f: impl Fn(&Seen) -> Vec<u8> + 'a) -> Out<'a> {
    Out::Frame(later(f))
}

/// Expected: `t`, from a client to the etcd frontend, as the program sends it on along the first
/// flow seen (to that flow's server, from its NAT port).
pub fn forwarded(t: Tcp) -> Out<'static> {
    exact_later(move |s| s.flows[0].forward(&t).frame())
}

/// Expected: `t`, from an IPv6 client to the etcd frontend, as the program sends it on along the
/// first IPv6 flow seen.
pub fn forwarded6(t: Tcp<Ipv6Addr>) -> Out<'static> {
    exact_later(move |s| s.flows6[0].forward(&t).frame())
}

/// The fixture's interface a frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iface {
    D0,
    D1,
}

/// A counter of the data path: a packet's reason, or an event.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    Reason(Reason),
    Event(Event),
}

impl From<Reason> for Counter {
    fn from(r: Reason) -> Self {
        Counter::Reason(r)
    }
}

impl From<Event> for Counter {
    fn from(e: Event) -> Self {
        Counter::Event(e)
    }
}

impl Counter {
    fn read(self, l: &Loaded) -> u64 {
        match self {
            Counter::Reason(r) => l.reason(r),
            Counter::Event(e) => l.event(e),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Counter::Reason(r) => r.name(),
            Counter::Event(e) => e.name(),
        }
    }
}

/// Runs just before the frame is sent (to note a clock, say).
pub type Before<'a> = Box<dyn Fn(&mut Seen) + 'a>;
/// Takes what later rows need from the output frame, parsed.
pub type Capture<'a> = Box<dyn Fn(&mut Seen, &Tcp) + 'a>;
/// The same for an IPv6 output frame.
pub type Capture6<'a> = Box<dyn Fn(&mut Seen, &Tcp<Ipv6Addr>) + 'a>;
/// Asserts anything else once the row has run.
pub type Check<'a> = Box<dyn Fn(&Loaded, &Seen) + 'a>;

/// One row: a frame in; the action and the frame expected out; what the row must leave behind.
pub struct Case<'a> {
    pub what: String,
    pub on: Iface,
    pub input: Val<'a, Vec<u8>>,
    pub action: u32,
    pub output: Out<'a>,
    pub before: Vec<Before<'a>>,
    pub capture: Vec<Capture<'a>>,
    pub capture6: Vec<Capture6<'a>>,
    /// Counters and by how much this row moves each.
    pub counts: Vec<(Counter, u64)>,
    /// Counters and what each reads after this row (since the program was loaded).
    pub totals: Vec<(Counter, u64)>,
    /// Flow entries and the state this row leaves each in.
    pub flows: Vec<(Val<'a, FlowKey>, FlowState)>,
    /// IPv6 flow entries and the state this row leaves each in.
    pub flows6: Vec<(Val<'a, FlowKey6>, FlowState)>,
    pub checks: Vec<Check<'a>>,
}

impl<'a> Case<'a> {
    /// `input`, arriving on d0, must give `action` and `output`.
    pub fn new(what: impl Into<String>, input: Val<'a, Vec<u8>>, action: u32, output: Out<'a>) -> Self {
        Case {
            what: what.into(),
            on: Iface::D0,
            input,
            action,
            output,
            before: Vec::new(),
            capture: Vec::new(),
            capture6: Vec::new(),
            counts: Vec::new(),
            totals: Vec::new(),
            flows: Vec::new(),
            flows6: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// The frame arrives on `iface` instead of d0.
    #[must_use]
    pub fn on(mut self, iface: Iface) -> Self {
        self.on = iface;
        self
    }

    #[must_use]
    pub fn before(mut self, f: impl Fn(&mut Seen) + 'a) -> Self {
        self.before.push(Box::new(f));
        self
    }

    /// `f` takes what later rows need from the output frame (which must be IPv4/TCP); it runs
    /// right after the action is checked, before the output is compared.
    #[must_use]
    pub fn capture(mut self, f: impl Fn(&mut Seen, &Tcp) + 'a) -> Self {
        self.capture.push(Box::new(f));
        self
    }

    /// `capture` for an IPv6/TCP output frame.
    #[must_use]
    pub fn capture6(mut self, f: impl Fn(&mut Seen, &Tcp<Ipv6Addr>) + 'a) -> Self {
        self.capture6.push(Box::new(f));
        self
    }

    /// This row adds `by` to `counter`.
    #[must_use]
    pub fn counts(mut self, counter: impl Into<Counter>, by: u64) -> Self {
        self.counts.push((counter.into(), by));
        self
    }

    /// After this row, `counter` reads `total`.
    #[must_use]
    pub fn total(mut self, counter: impl Into<Counter>, total: u64) -> Self {
        self.totals.push((counter.into(), total));
        self
    }

    /// After this row, the entry under `key` is in `state`.
    #[must_use]
    pub fn flow(mut self, key: Val<'a, FlowKey>, state: FlowState) -> Self {
        self.flows.push((key, state));
        self
    }

    /// After this row, the IPv6 entry under `key` is in `state`.
    #[must_use]
    pub fn flow6(mut self, key: Val<'a, FlowKey6>, state: FlowState) -> Self {
        self.flows6.push((key, state));
        self
    }

    /// This row's SYN opens a flow: its server and NAT port go to `seen.flows`, its TSval to
    /// `seen.tsval`, the clock around it to `seen.clock`.
    #[must_use]
    pub fn opens(self) -> Self {
        self.before(|seen| seen.clock.0 = ts_clock(monotonic_ns())).capture(|seen, syn| {
            seen.clock.1 = ts_clock(monotonic_ns());
            seen.flows.push(Nat::of(syn));
            seen.tsval = syn_tsval(&syn.tcp_options);
        })
    }

    /// `opens` for an IPv6 SYN: its server and NAT port go to `seen.flows6`.
    #[must_use]
    pub fn opens6(self) -> Self {
        self.before(|seen| seen.clock.0 = ts_clock(monotonic_ns())).capture6(|seen, syn| {
            seen.clock.1 = ts_clock(monotonic_ns());
            seen.flows6.push(Nat::of(syn));
            seen.tsval = syn_tsval(&syn.tcp_options);
        })
    }

    /// After this row, `f` asserts whatever else it says.
    #[must_use]
    pub fn check(mut self, f: impl Fn(&Loaded, &Seen) + 'a) -> Self {
        self.checks.push(Box::new(f));
        self
    }
}

/// The TSval of Linux's SYN options (MSS, SACK_PERM, TS with its TSval 8 bytes in, NOP, WS);
/// 0 for other options.
fn syn_tsval(options: &[u8]) -> u32 {
    match options.get(6..12) {
        Some([8, 10, v @ ..]) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        _ => 0,
    }
}

fn action_name(a: u32) -> String {
    match a {
        0 => "XDP_ABORTED".into(),
        1 => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        a => format!("action {a}"),
    }
}

/// Plays `table` in order on `l`, asserting every row; returns what they saw.
pub fn run(l: &mut Loaded, table: &[Case<'_>]) -> Seen {
    let mut seen = Seen::default();
    for (n, case) in table.iter().enumerate() {
        let row = format!("row {n} ({})", case.what);
        for f in &case.before {
            f(&mut seen);
        }
        let input = case.input.get(&seen);
        let counters_before: Vec<u64> = case.counts.iter().map(|(c, _)| c.read(l)).collect();
        let ifindex = match case.on {
            Iface::D0 => l.d0,
            Iface::D1 => l.d1,
        };
        let (action, out) = l.run_on(&input, ifindex);
        assert_eq!(action_name(action), action_name(case.action), "{row}: action");
        if !case.capture.is_empty() {
            let got = frames::parse(&out).unwrap_or_else(|| panic!("{row}: the output is no IPv4/TCP frame"));
            for f in &case.capture {
                f(&mut seen, &got);
            }
        }
        if !case.capture6.is_empty() {
            let got = frames::parse6(&out).unwrap_or_else(|| panic!("{row}: the output is no IPv6/TCP frame"));
            for f in &case.capture6 {
                f(&mut seen, &got);
            }
        }
        match &case.output {
            Out::Unchanged => {
                assert_eq!(out, input, "{row}: must come back unchanged ({} bytes)", input.len());
            }
            Out::Frame(expected) => {
                let expected = expected.get(&seen);
                // Field by field first, which reads well when they differ; then every byte.
                assert_eq!(frames::parse(&out), frames::parse(&expected), "{row}: output frame");
                assert_eq!(frames::parse6(&out), frames::parse6(&expected), "{row}: output frame (IPv6)");
                assert_eq!(out, expected, "{row}: output frame, byte for byte");
                assert!(frames::checksums_valid(&out), "{row}: output checksums valid");
            }
        }
        for ((counter, by), was) in case.counts.iter().zip(counters_before) {
            assert_eq!(counter.read(l).wrapping_sub(was), *by, "{row}: {} moved by", counter.name());
        }
        for (counter, total) in &case.totals {
            assert_eq!(counter.read(l), *total, "{row}: {} after this row", counter.name());
        }
        for (key, state) in &case.flows {
            let key = key.get(&seen);
            let entry = l.entry(key).unwrap_or_else(|| panic!("{row}: no flow entry under {key:?}"));
            assert_eq!(FlowState::of(&entry), *state, "{row}: state of the entry under {key:?}");
        }
        for (key, state) in &case.flows6 {
            let key = key.get(&seen);
            let entry = l.entry6(key).unwrap_or_else(|| panic!("{row}: no IPv6 flow entry under {key:?}"));
            assert_eq!(FlowState::of(&entry), *state, "{row}: state of the IPv6 entry under {key:?}");
        }
        for check in &case.checks {
            check(l, &seen);
        }
    }
    seen
}
