//! Logs an operator can filter (issue 13): under systemd the agent's records reach the journal
//! with HAProxy's alert levels as priorities (DOWN warning, UP notice) and structured fields
//! (SERVER, BACKEND, STATE, CHECK); when the journal's socket takes nothing, stderr lines carry
//! sd-daemon(3)'s `<N>` prefixes. A fake journal socket stands for journald.

use std::{
    collections::BTreeMap,
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

/// One native-protocol entry: `KEY=value` lines, or `KEY`, a 64-bit length and the value.
fn parse_entry(mut data: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    while let Some(nl) = data.iter().position(|&b| b == b'\n') {
        let (line, rest) = data.split_at(nl);
        let rest = &rest[1..];
        let line = String::from_utf8_lossy(line).into_owned();
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
            data = rest;
        } else {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(line, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

/// Reads entries until one's MESSAGE contains `needle`; returns it.
fn wait_entry(sock: &UnixDatagram, needle: &str, within: Duration) -> BTreeMap<String, String> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        assert!(Instant::now() < deadline, "no journal entry with {needle:?} within {within:?}");
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let e = parse_entry(&buf[..n]);
        if e.get("MESSAGE").is_some_and(|m| m.contains(needle)) {
            return e;
        }
    }
}

#[test]
fn journal_priorities_and_fields_then_prefixed_stderr() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg = lab::config(&lab, PORT, BACKEND_PORT, "", &[]).replace(
        "name = \"pool\"\n",
        "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"300ms\", timeout = \"300ms\", rise = 2, fall = 3 }\n",
    );
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-journal-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal.sock");
    let journal = UnixDatagram::bind(&path).unwrap();
    journal.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut agent = Agent::start_under_journal(&lab.lb, &cfg, &lab.lb_ifaces, &path).unwrap();

    let ready = wait_entry(&journal, "ready:", Duration::from_secs(30));
    assert_eq!((ready["PRIORITY"].as_str(), ready["SYSLOG_IDENTIFIER"].as_str()), ("6", "xdplb"), "{ready:?}");
    wait_entry(&journal, "first checks done", Duration::from_secs(10));

    // DOWN: a warning, with the fields an operator filters on.
    lab.backends[2].ns.kill_all();
    let down = wait_entry(&journal, "Server pool/app3 is DOWN", Duration::from_secs(10));
    for (k, v) in
        [("PRIORITY", "4"), ("SERVER", "pool/app3"), ("BACKEND", "pool"), ("STATE", "DOWN"), ("CHECK", "L4CON")]
    {
        assert_eq!(down.get(k).map(String::as_str), Some(v), "{k} in {down:?}");
    }
    assert!(!agent.log_text().contains("is DOWN"), "sent to the journal, not also to stderr");

    // The journal goes away: the records go to stderr, each line with its priority prefix; UP
    // is a notice.
    drop(journal);
    std::fs::remove_file(&path).unwrap();
    lab.start_server(2, &server_bin(), BACKEND_PORT).unwrap();
    agent.wait_log("<5>Server pool/app3 is UP", 1, Duration::from_secs(10)).unwrap();
    let log = agent.log_text();
    assert!(log.lines().all(|l| l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>'), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}
