//! The per-connection log (`global.tcplog`, issue 13): the data path's flow events become one
//! line per connection in HAProxy's `option tcplog` format, with the server that took it and the
//! bytes it sent; a flow the sweep expires without a close packet is logged by the sweep.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use integration::{
    agent::Agent,
    lab::{self, Lab},
    traffic::connect,
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
const N: usize = 30;

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

/// The agent's tcplog lines: client -> the line's fields after the date.
fn lines(log: &str) -> BTreeMap<String, Vec<String>> {
    log.lines()
        .filter_map(|l| l.split_once(" tcplog] ").map(|(_, rest)| rest))
        .filter_map(|l| {
            let (client, rest) = l.split_once(' ')?;
            let (_, fields) = rest.split_once("] ")?;
            Some((client.to_string(), fields.split_whitespace().map(str::to_string).collect()))
        })
        .collect()
}

fn wait_lines(agent: &Agent, n: usize) -> BTreeMap<String, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = lines(&agent.log_text());
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_connection_gives_one_tcplog_line_with_its_server_and_bytes() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg =
        lab::config(&lab, PORT, BACKEND_PORT, "tcplog = true\nidle_timeout = \"2s\"\ngc_interval = \"200ms\"", &[])
            .replace("name = \"pool\"\n", "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"300ms\" }\n");
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();

    // N connections, each echoing its own number of bytes, closed by the client.
    let want: BTreeMap<String, (String, usize)> = lab.client.enter(|| {
        (0..N)
            .map(|i| {
                let (mut s, name) = connect(vip).unwrap();
                let len = 1000 + 37 * i;
                s.write_all(&vec![b'x'; len]).unwrap();
                let mut back = vec![0u8; len];
                s.read_exact(&mut back).unwrap();
                let client = s.local_addr().unwrap().to_string();
                s.shutdown(Shutdown::Write).unwrap();
                // The server closes in turn: FIN both ways.
                assert_eq!(s.read(&mut back).unwrap(), 0);
                // The server's payload: its name line, then the echo.
                (client, (name.clone(), name.len() + 1 + len))
            })
            .collect()
    });
    let got = wait_lines(&agent, N);
    eprintln!(
        "{}",
        agent.log_text().lines().filter(|l| l.contains(" tcplog] ")).take(3).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(got.len(), N, "one line per connection: {got:#?}");
    for (client, (server, bytes)) in &want {
        let f = got.get(client).unwrap_or_else(|| panic!("no line for {client}: {got:#?}"));
        // front pool/appN Tw/Tc/Tt bytes termination ac/fc/bc/sc/rc sq/bq
        assert_eq!(f[0], "front", "{f:?}");
        assert_eq!(f[1], format!("pool/{server}"), "{client}: {f:?}");
        let times: Vec<i64> = f[2].split('/').map(|t| t.parse().unwrap()).collect();
        assert!(times.len() == 3 && times[0] == 0 && times[1] >= 0 && times[2] >= times[1], "{f:?}");
        assert_eq!(f[3], bytes.to_string(), "{client} bytes: {f:?}");
        assert_eq!(f[4], "--", "closed with FIN both ways: {f:?}");
        assert_eq!(f[6], "0/0");
    }

    // A connection left idle past idle_timeout: the sweep removes it and logs it (cD).
    let (idle, _) = lab.client.enter(|| connect(vip).unwrap());
    let client = idle.local_addr().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(f) = lines(&agent.log_text()).get(&client) {
            break f.clone();
        }
        assert!(Instant::now() < deadline, "the idle flow was not logged");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line[4], "cD", "{line:?}");
    drop(idle);
    let counters = lb_user::dataplane::counters::Counters::open_pinned(agent.pin_dir()).unwrap();
    let dropped = counters.events().unwrap().into_iter().find(|(e, _)| *e == lb_common::Event::FlowEventDropped);
    assert_eq!(dropped.map(|(_, n)| n), Some(0), "no flow event dropped");
}
