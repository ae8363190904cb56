//! `show sess`: the connection table in HAProxy's `show sess` line format, as far as it applies
//! to a data path that keeps no stream (no buffers, no tasks): the session's id, protocol,
//! client, frontend, backend, server and age, then xdplb's own words (state, idle, bytes).

use std::{collections::HashMap, fmt::Write as _};

use crate::dataplane::flows::FlowView;

/// The names `show sess` prints for the ids the data path records.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Frontend id -> (frontend, backend).
    pub frontends: HashMap<u32, (String, String)>,
    /// Server id -> server.
    pub servers: HashMap<u32, String>,
}

/// HAProxy's `human_time`: `5s`, `1m05s`, `2h03m`, `1d02h`.
pub fn human_time(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3_600 % 24),
    }
}

/// One line per flow, oldest first, then the empty line that ends every CLI answer. Ids are
/// positions in this listing (`0x1`, ...): the data path has no session address to print.
pub fn show_sess(mut flows: Vec<FlowView>, names: &Names) -> String {
    flows.sort_by_key(|f| std::cmp::Reverse(f.age_ms));
    let mut out = String::new();
    for (i, f) in flows.iter().enumerate() {
        let (fe, be) = names.frontends.get(&f.frontend_id).map_or(("<NONE>", "<NONE>"), |(f, b)| (f, b));
        let srv = names.servers.get(&f.server_id).map_or("<none>", String::as_str);
        let _ = writeln!(
            out,
            "0x{:x}: proto=tcpv4 src={} fe={fe} be={be} srv={srv} ts=00 epoch=0 age={} calls=0 rate=0 cpu=0 lat=0 \
             state={} idle={} dst={} bytes_in={} bytes_out={}",
            i + 1,
            f.client,
            human_time(f.age_ms / 1000),
            f.state.name(),
            human_time(f.idle_ms / 1000),
            f.server,
            f.bytes_in,
            f.bytes_out,
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::flows::FlowState;

    fn flow(client: &str, server_id: u32, age_ms: u64) -> FlowView {
        FlowView {
            client: client.parse().unwrap(),
            frontend: "198.18.0.10:12379".parse().unwrap(),
            source: "198.18.1.1:40000".parse().unwrap(),
            server: "198.18.1.2:2379".parse().unwrap(),
            server_id,
            frontend_id: 1,
            state: FlowState::Established,
            age_ms,
            idle_ms: 1_500,
            packets_in: 3,
            bytes_in: 180,
            packets_out: 2,
            bytes_out: 120,
        }
    }

    #[test]
    fn haproxy_show_sess_lines() {
        let names = Names {
            frontends: [(1, ("in-etcd".to_string(), "etcd".to_string()))].into(),
            servers: [(3, "app1".to_string())].into(),
        };
        let out = show_sess(vec![flow("198.18.0.2:5000", 3, 65_000), flow("198.18.0.2:5001", 9, 200_000)], &names);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with(
                "0x1: proto=tcpv4 src=198.18.0.2:5001 fe=in-etcd be=etcd srv=<none> ts=00 epoch=0 age=3m20s "
            ),
            "{out}"
        );
        assert!(lines[1].starts_with("0x2: proto=tcpv4 src=198.18.0.2:5000 fe=in-etcd be=etcd srv=app1 "), "{out}");
        assert!(
            lines[1].contains(" age=1m05s ")
                && lines[1].ends_with("state=ESTABLISHED idle=1s dst=198.18.1.2:2379 bytes_in=180 bytes_out=120"),
            "{out}"
        );
        assert_eq!(lines[2], "");
        assert_eq!(show_sess(Vec::new(), &names), "\n");
        assert_eq!((human_time(7_300), human_time(90_000)), ("2h01m".to_string(), "1d01h".to_string()));
    }
}
