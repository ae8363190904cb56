//! What HAProxy users script and scrape keeps working (issue 13): the runtime API's commands
//! through `socat` at each level, the stats page's CSV export, and `/metrics` compared with real
//! HAProxy 2.6's exporter on an equivalent configuration in the same lab.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use integration::{
    agent::{socat, Agent},
    lab::{self, Lab},
    traffic::connect,
};

const PORT: u16 = 12379;
const BACKEND_PORT: u16 = 2379;
/// HAProxy's own frontend in the balancer's namespace (XDP owns the VIP's PORT).
const HAPROXY_PORT: u16 = 12380;
const HAPROXY_METRICS: &str = "127.0.0.1:18405";

fn server_bin() -> String {
    env!("CARGO_BIN_EXE_lbtest-server").to_string()
}

fn spread(lab: &Lab, vip: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    lab.client.enter(|| {
        let mut m = BTreeMap::new();
        for _ in 0..n {
            *m.entry(connect(vip).unwrap().1).or_insert(0) += 1;
        }
        m
    })
}

/// A request to `addr` in the balancer's namespace: the status line, headers and body as sent.
fn http(lab: &Lab, addr: &str, method: &str, path: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    lab.lb.enter(|| {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// A response's body, its chunks joined when it came chunked (HAProxy's exporter answers
/// chunked whatever the request's version).
fn body(response: &str) -> String {
    let Some((head, body)) = response.split_once("\r\n\r\n") else { return String::new() };
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_string();
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until every server of the lab is UP in `show stat`.
fn wait_all_up(sock: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = socat(sock, "show stat -1 4 -1");
        if stat.lines().filter(|l| l.split(',').nth(17) == Some("UP")).count() == n {
            return;
        }
        assert!(Instant::now() < deadline, "servers not UP: {stat}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn runtime_api_parity_through_socat_at_each_level() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-parity-"));
    std::fs::create_dir_all(&dir).unwrap();
    let (user, operator) = (dir.join("user.sock"), dir.join("operator.sock"));
    let global = format!(
        "[[global.runtime_sockets]]\npath = \"{}\"\nlevel = \"user\"\n\n[[global.runtime_sockets]]\npath = \"{}\"\nlevel = \"operator\"\n",
        user.display(),
        operator.display()
    );
    let app1 = format!("name = \"app1\", address = \"{}:{BACKEND_PORT}\"", lab.backends[0].addr);
    let cfg = lab::config(&lab, PORT, BACKEND_PORT, "", &[])
        .replace("[global]\n\n", &format!("[global]\n{global}\n"))
        .replace("name = \"pool\"\n", "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"300ms\" }\n")
        .replace(&app1, &format!("{app1}, weight = 4"));
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();
    let admin = agent.socket();
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    wait_all_up(&admin, 3);

    // get/set weight, HAProxy's answers: N% is of the configured weight.
    assert_eq!(socat(&admin, "get weight pool/app1"), "4 (initial 4)\n\n");
    assert_eq!(socat(&admin, "set weight pool/app1 50%"), "\n");
    assert_eq!(socat(&admin, "get weight pool/app1"), "2 (initial 4)\n\n");
    assert_eq!(socat(&admin, "set server pool/app1 weight 25%"), "\n");
    assert_eq!(socat(&user, "get weight pool/app1"), "1 (initial 4)\n\n", "a user-level socket reads weights");
    assert_eq!(
        socat(&admin, "set weight pool/app1 300"),
        "Absolute weight can only be between 0 and 256 inclusive.\n\n"
    );
    assert_eq!(socat(&admin, "set weight pool/app1 -5%"), "Relative weight must be positive.\n\n");
    assert_eq!(socat(&admin, "get weight pool/ghost"), "No such server.\n\n");
    assert_eq!(socat(&admin, "get weight nobody/app1"), "No such backend.\n\n");
    // Weights 1:1:1 again: 30 new flows, 10 each.
    assert_eq!(socat(&admin, "set weight pool/app1 1"), "\n");
    assert_eq!(spread(&lab, vip, 30).get("app1"), Some(&10));

    // disable server is maintenance: no new flows, MAINT in show stat; enable brings it back.
    assert_eq!(socat(&admin, "disable server pool/app3"), "\n");
    let m = spread(&lab, vip, 30);
    assert!(!m.contains_key("app3") && m.values().sum::<usize>() == 30, "{m:?}");
    assert!(socat(&admin, "show stat").lines().any(|l| l.starts_with("pool,app3,") && l.contains(",MAINT,")));
    assert_eq!(socat(&admin, "enable server pool/app3"), "\n");
    wait_all_up(&admin, 3);
    assert_eq!(spread(&lab, vip, 30).get("app3"), Some(&10), "back in rotation");

    // show stat filters as hatop sends them: servers only, then one proxy's BACKEND row.
    let servers = socat(&user, "show stat -1 4 -1");
    let rows: Vec<&str> = servers.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{servers}");
    assert!(rows.iter().all(|l| l.starts_with("pool,app")), "{servers}");
    let iid = rows[0].split(',').nth(27).unwrap().to_string();
    let backend = socat(&user, &format!("show stat {iid} 2 -1"));
    let rows: Vec<&str> = backend.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert!(rows.len() == 1 && rows[0].starts_with("pool,BACKEND,"), "{backend}");
    assert!(rows[0].contains(",roundrobin,"), "algo: {backend}");

    // show sess: one line per open flow, with its client and server; operator level.
    let open: Vec<_> = lab.client.enter(|| (0..3).map(|_| connect(vip).unwrap()).collect());
    let mut want: Vec<(String, String)> =
        open.iter().map(|(s, name)| (s.local_addr().unwrap().to_string(), name.clone())).collect();
    want.sort();
    let sess = socat(&operator, "show sess");
    let mut got: Vec<(String, String)> = sess
        .lines()
        .filter(|l| l.contains(" proto=tcpv4 "))
        .map(|l| {
            let field = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("").to_string();
            assert_eq!((field("fe=").as_str(), field("be=").as_str()), ("front", "pool"), "{l}");
            (field("src="), field("srv="))
        })
        .filter(|(src, _)| want.iter().any(|(w, _)| w == src))
        .collect();
    got.sort();
    assert_eq!(got, want, "{sess}");
    assert!(sess.ends_with("\n\n"), "{sess}");
    drop(open);

    // Below admin, nothing changes, and show sess needs operator.
    for line in [
        "disable server pool/app1",
        "enable server pool/app1",
        "set weight pool/app1 50%",
        "set server pool/app1 weight 0",
        "shutdown sessions server pool/app1",
    ] {
        for sock in [&user, &operator] {
            assert_eq!(socat(sock, line), "Permission denied\n\n", "{line} on {}", sock.display());
        }
    }
    assert_eq!(socat(&user, "show sess"), "Permission denied\n\n");
    assert_eq!(socat(&admin, "get weight pool/app1"), "1 (initial 4)\n\n", "unchanged");

    // The stats page: HAProxy's CSV export and HEAD.
    for path in ["/;csv", "/stats;csv", "/;csv;norefresh"] {
        let r = http(&lab, "127.0.0.1:8404", "GET", path);
        assert!(r.starts_with("HTTP/1.1 200 "), "{path}: {r}");
        let csv = &body(&r);
        assert!(csv.starts_with("# pxname,svname,"), "{path}: {csv}");
        assert_eq!(csv.lines().filter(|l| l.starts_with("pool,")).count(), 4, "3 servers and BACKEND: {csv}");
    }
    let head = http(&lab, "127.0.0.1:8404", "HEAD", "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 ") && head.contains("Content-Length: "), "{head}");
    assert_eq!(body(&head), "", "HEAD has no body");
    let _ = std::fs::remove_dir_all(dir);
}

/// A scrape's families: name -> (type, label names seen on its samples).
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (w.next(), w.next()) {
                out.entry(name.to_string()).or_default().0 = kind.to_string();
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            let labels = l.split_once('{').and_then(|(_, r)| r.rsplit_once('}')).map_or("", |(ls, _)| ls);
            // Label values here hold no `",`, so a split on `",` is exact.
            let names = labels.split("\",").filter_map(|p| p.split_once('=')).map(|(k, _)| k.trim().to_string());
            out.entry(name.to_string()).or_default().1.extend(names);
        }
    }
    out
}

fn promtool(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool: {report}");
}

#[test]
fn metrics_info_and_csv_match_real_haproxy_26() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(&server_bin(), BACKEND_PORT).unwrap();
    let cfg = lab::config(&lab, PORT, BACKEND_PORT, "", &[])
        .replace("name = \"pool\"\n", "name = \"pool\"\ncheck = { type = \"tcp\", inter = \"300ms\" }\n");
    let agent = Agent::start(&lab.lb, &cfg, &lab.lb_ifaces, "native").unwrap();

    // The same frontend, backend and checks in HAProxy, beside it in the balancer's namespace.
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-haproxy-"));
    std::fs::create_dir_all(&dir).unwrap();
    let hsock = dir.join("haproxy.sock");
    let servers: String = lab
        .backends
        .iter()
        .map(|b| format!("  server {} {}:{BACKEND_PORT} check inter 300ms\n", b.name, b.addr))
        .collect();
    let hcfg = format!(
        "global\n  stats socket {} level admin\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend front\n  bind 127.0.0.1:{HAPROXY_PORT}\n  default_backend pool\n\
         backend pool\n  balance roundrobin\n{servers}\
         frontend prometheus\n  mode http\n  bind {HAPROXY_METRICS}\n  http-request use-service prometheus-exporter if {{ path /metrics }}\n",
        hsock.display()
    );
    let hfile = dir.join("haproxy.cfg");
    std::fs::write(&hfile, hcfg).unwrap();
    let mut haproxy = lab.lb.spawn("haproxy", &["-db", "-f", hfile.to_str().unwrap()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while socat(&hsock, "show stat -1 4 -1").lines().filter(|l| l.contains(",UP,")).count() != 3 {
        assert!(Instant::now() < deadline && haproxy.try_wait().unwrap().is_none(), "HAProxy did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_all_up(&agent.socket(), 3);
    // Traffic through both, so that every family has samples.
    let vip: SocketAddr = SocketAddrV4::new(lab.vip, PORT).into();
    spread(&lab, vip, 3);
    lab.lb.enter(|| (0..3).for_each(|_| drop(connect(format!("127.0.0.1:{HAPROXY_PORT}").parse().unwrap()))));

    let ours_text = body(&http(&lab, "127.0.0.1:8404", "GET", "/metrics"));
    let theirs_text = body(&http(&lab, HAPROXY_METRICS, "GET", "/metrics"));
    promtool(&ours_text);
    let (ours, theirs) = (families(&ours_text), families(&theirs_text));
    assert!(theirs.len() > 100, "HAProxy's exporter answered: {theirs_text}");

    let mut table = String::from("family | type | labels | HAProxy 2.6\n");
    let mut wrong = Vec::new();
    for (name, (kind, labels)) in ours.iter().filter(|(n, _)| n.starts_with("haproxy_")) {
        let verdict = match theirs.get(name) {
            None => "NOT IN HAPROXY".to_string(),
            Some((k, l)) if k == kind && l == labels => "same".to_string(),
            Some((k, l)) => format!("DIFFERS: {k} {l:?}"),
        };
        if verdict != "same" {
            wrong.push(format!("{name}: {verdict}"));
        }
        let _ =
            writeln!(table, "{name} | {kind} | {} | {verdict}", labels.iter().cloned().collect::<Vec<_>>().join(","));
    }
    let lacking: Vec<&String> = theirs.keys().filter(|n| !ours.contains_key(*n)).collect();
    let own: Vec<&String> = ours.keys().filter(|n| n.starts_with("xdplb_")).collect();
    eprintln!(
        "{table}\n{} HAProxy families xdplb has, {} it lacks: {lacking:?}\nxdplb's own: {own:?}",
        ours.len() - own.len(),
        lacking.len()
    );
    assert!(wrong.is_empty(), "families under HAProxy names that differ: {wrong:#?}");
    for must in [
        "haproxy_backend_status",
        "haproxy_frontend_status",
        "haproxy_server_status",
        "haproxy_server_check_status",
        "haproxy_server_check_last_change_seconds",
        "haproxy_server_connection_errors_total",
    ] {
        assert!(ours.contains_key(must), "{must}");
    }
    // Dashboards' queries on state="UP" match in both.
    for text in [&ours_text, &theirs_text] {
        assert!(text.contains("haproxy_backend_status{proxy=\"pool\",state=\"UP\"} 1"), "{text}");
    }

    // show info: the same field names, in the same order (xdplb adds `description`).
    let names = |info: &str| -> Vec<String> {
        info.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, _)| k.to_string())
            .filter(|k| k != "description")
            .collect()
    };
    assert_eq!(names(&socat(&agent.socket(), "show info")), names(&socat(&hsock, "show info")));
    // show stat: the same header, and the same columns filled in the server rows' check fields.
    let header = |s: String| s.lines().next().unwrap_or("").to_string();
    assert_eq!(header(socat(&agent.socket(), "show stat")), header(socat(&hsock, "show stat")));
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let _ = std::fs::remove_dir_all(dir);
}
