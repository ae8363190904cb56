//! Fuzzing what the agent reads from others: HTTP/1 responses (health checks, `xdplb status`),
//! request heads (the status page) and runtime API command lines. Inputs are the committed
//! corpus (`tests/corpus/http1`: good replies, and every hostile one the tests know) mutated by
//! proptest (bytes flipped, inserted, removed, ranges repeated, seeds spliced), fed whole and
//! in arbitrary pieces. The promises: nothing panics; fed in pieces or whole, the verdict is
//! the same; a response accepted has a body within the limit.
//!
//! A short run in `cargo xtask test`; `cargo xtask test --long` (XDPLB_LONG_TESTS=1) runs for
//! three minutes.
// A test: clippy.toml's test allowances apply to #[test] functions, not to these helpers.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers: a panic fails the test, which is its job"
)]

use std::time::{Duration, Instant};

use lb_user::http1::{self, Limits, Reader};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/http1");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(seeds.len() >= 20, "the corpus is there: {files:?}");
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Repeat(usize, usize, usize),
    Splice(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (
            any::<usize>(),
            prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b':'), Just(b'f')], 1..16)
        )
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1..64usize).prop_map(|(at, n)| Mutation::Remove(at, n)),
        (any::<usize>(), 1..32usize, 1..200usize).prop_map(|(at, n, times)| Mutation::Repeat(at, n, times)),
        (any::<usize>(), any::<usize>()).prop_map(|(other, at)| Mutation::Splice(other, at)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(seeds: &[Vec<u8>], seed: usize, ms: &[Mutation]) -> Vec<u8> {
    let mut b = seeds[seed % seeds.len()].clone();
    for m in ms {
        let at = |i: usize, b: &Vec<u8>| if b.is_empty() { 0 } else { i % (b.len() + 1) };
        match m {
            Mutation::Flip(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= v | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, bytes) => {
                let i = at(*i, &b);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = at(*i, &b);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Repeat(i, n, times) => {
                let i = at(*i, &b);
                let end = (i + n).min(b.len());
                let part = b[i..end].to_vec();
                for _ in 0..*times {
                    b.splice(end..end, part.iter().copied());
                }
            }
            Mutation::Splice(other, i) => {
                let i = at(*i, &b);
                let o = &seeds[other % seeds.len()];
                b.truncate(i);
                b.extend_from_slice(&o[(other / 7) % (o.len() + 1)..]);
            }
            Mutation::Truncate(i) => {
                let i = at(*i, &b);
                b.truncate(i);
            }
        }
    }
    b
}

/// The verdict of a reader fed `input` in pieces of the given sizes, then closed.
fn in_pieces(input: &[u8], sizes: &[usize], limits: Limits) -> Result<http1::Response, http1::Invalid> {
    let mut r = Reader::new(limits);
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        if let Some(response) = r.feed(piece)? {
            return Ok(response);
        }
        rest = tail;
    }
    r.finish()
}

fn check_response(input: &[u8], sizes: &[usize]) -> Result<(), TestCaseError> {
    for limits in [Limits::CHECK, Limits { head: 256, body: 64 }] {
        let whole = in_pieces(input, &[usize::MAX], limits);
        let pieces = in_pieces(input, sizes, limits);
        // Pieces may be refused earlier (a limit crossed before the end was seen) but never
        // accepted differently.
        match (&whole, &pieces) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
                prop_assert!(false, "whole and pieces disagree: {:?} vs {:?}", a, e);
            }
        }
        if let Ok(r) = &whole {
            prop_assert!(r.body.len() <= limits.body, "a body of {} over {}", r.body.len(), limits.body);
        }
        if let Err(e) = &whole {
            // Messages quote at most a line's first 80 characters (escaped: up to 10 each).
            prop_assert!(e.to_string().chars().count() < 1000, "{}", e);
        }
    }
    let _ = http1::response(input, false);
    let _ = http1::request_line(input);
    let _ = lb_user::runtime::parse(&String::from_utf8_lossy(input));
    Ok(())
}

#[test]
fn the_corpus_as_it_is() {
    for seed in corpus() {
        check_response(&seed, &[1]).unwrap();
        check_response(&seed, &[7, 3, 4096]).unwrap();
    }
}

#[test]
fn mutated_responses_never_panic_and_agree_in_pieces() {
    let seeds = corpus();
    let long = std::env::var_os("XDPLB_LONG_TESTS").is_some();
    let (cases, budget) = if long { (20_000, Duration::from_mins(3)) } else { (1500, Duration::ZERO) };
    let started = Instant::now();
    let mut rounds = 0u64;
    loop {
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(
            config,
            proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&rounds.to_le_bytes());
                s
            }),
        );
        let strategy =
            (any::<usize>(), prop::collection::vec(mutation(), 0..6), prop::collection::vec(1..300usize, 1..8));
        runner.run(&strategy, |(seed, ms, sizes)| check_response(&mutate(&seeds, seed, &ms), &sizes)).unwrap();
        rounds += 1;
        if started.elapsed() >= budget {
            break;
        }
    }
    eprintln!("{} mutated inputs in {:?}", rounds * u64::from(cases), started.elapsed());
}
