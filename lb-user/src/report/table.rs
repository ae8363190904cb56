//! `xdplb status` for a terminal: plain text tables, no colours.

use std::fmt::Write as _;

use super::{
    format::{fmt_rate, human_bytes, human_time, last_check_text, VERIFY_NONE_WARNING},
    snapshot::Snapshot,
};

/// Control characters in a name could move the cursor or recolour the terminal: show them as `?`.
fn term(s: &str) -> String {
    let t: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    // An empty cell would break the column layout for the eye: show a dash.
    if t.is_empty() {
        "-".to_string()
    } else {
        t
    }
}

/// A table's header row.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|h| h.to_string()).collect()
}

/// Left-aligned columns, two spaces apart, widths from the widest cell.
fn grid(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            let pad = width[i].saturating_sub(c.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `xdplb status` for a terminal: plain text, no colours.
pub fn table(s: &Snapshot) -> String {
    let mut o = String::new();
    let ifaces = if s.interfaces.is_empty() { "none".to_string() } else { term(&s.interfaces.join(", ")) };
    let _ = writeln!(
        o,
        "xdplb {}  pid {}  uptime {}  interfaces: {}",
        term(&s.version),
        s.pid,
        human_time(s.uptime_s),
        ifaces
    );
    for b in &s.backends {
        o.push('\n');
        let _ = writeln!(
            o,
            "backend {}  {}  {} active, {} backup UP  check: {}",
            term(&b.name),
            term(&b.status),
            b.active_up,
            b.backup_up,
            term(&b.check)
        );
        if b.verify_none {
            let _ = writeln!(o, "WARNING: {VERIFY_NONE_WARNING}");
        }
        let mut rows = vec![header(&[
            "NAME",
            "ADDRESS",
            "STATUS",
            "LAST CHECK",
            "WEIGHT",
            "ACT/BCK",
            "CUR",
            "TOTAL",
            "RATE",
            "CHKFAIL",
            "DOWNS",
        ])];
        for v in &b.servers {
            rows.push(vec![
                term(&v.name),
                term(&v.address),
                format!("{} ({})", term(&v.status), human_time(v.since_s)),
                v.last_check.as_ref().map(|c| term(&last_check_text(c))).unwrap_or_else(|| "-".into()),
                v.weight.to_string(),
                (if v.backup { "bck" } else { "act" }).to_string(),
                v.active_flows.to_string(),
                v.traffic.total_flows.to_string(),
                fmt_rate(v.traffic.new_flows_per_s),
                v.check_failures.to_string(),
                v.down_transitions.to_string(),
            ]);
        }
        grid(&mut o, &rows);
    }
    if !s.frontends.is_empty() {
        o.push_str("\nfrontends\n");
        let mut rows = vec![header(&["NAME", "BIND", "BACKEND", "CUR", "TOTAL", "RATE", "BYTES IN", "BYTES OUT"])];
        for f in &s.frontends {
            rows.push(vec![
                term(&f.name),
                term(&f.bind),
                term(&f.backend),
                f.active_flows.to_string(),
                f.traffic.total_flows.to_string(),
                fmt_rate(f.traffic.new_flows_per_s),
                human_bytes(f.traffic.bytes_in),
                human_bytes(f.traffic.bytes_out),
            ]);
        }
        grid(&mut o, &rows);
    }
    o
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::snapshot;
    /// Column starts of a header: a non-space after two spaces (headers have single spaces only).
    fn column_starts(header: &str) -> Vec<usize> {
        let b = header.as_bytes();
        (0..b.len()).filter(|&i| b[i] != b' ' && (i == 0 || (i >= 2 && b[i - 1] == b' ' && b[i - 2] == b' '))).collect()
    }

    fn assert_block_aligned(block: &[&str], ncols: usize) {
        let starts = column_starts(block[0]);
        assert_eq!(starts.len(), ncols, "header {:?}", block[0]);
        for row in &block[1..] {
            let b = row.as_bytes();
            for &s in &starts {
                assert!(s < b.len() && b[s] != b' ', "column at {s} empty in {row:?}");
                assert!(s == 0 || b[s - 1] == b' ', "column at {s} not aligned in {row:?}");
            }
        }
    }

    #[test]
    fn terminal_table() {
        let t = table(&snapshot());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("xdplb 0.1.0  pid 4242  uptime 1d2h"));
        assert!(t.contains("backend etcd-cluster  UP  2 active, 0 backup UP  check: https GET /health"));
        assert_eq!(t.matches(VERIFY_NONE_WARNING).count(), 2);
        assert!(t.contains("L7OK/200 in 2ms") && t.contains("UP 1/3 (5m3s)"));
        assert!(!t.contains('\x1b'));
        let mut blocks = 0;
        for (i, l) in lines.iter().enumerate() {
            let ncols = if l.starts_with("NAME ") && l.contains("  ADDRESS") {
                11
            } else if l.starts_with("NAME ") && l.contains("  BIND") {
                8
            } else {
                continue;
            };
            let end = lines[i..].iter().position(|l| l.is_empty()).map_or(lines.len(), |p| i + p);
            let block = &lines[i..end];
            assert!(block.len() > 1);
            assert_block_aligned(block, ncols);
            blocks += 1;
        }
        assert_eq!(blocks, 3);
    }
}
