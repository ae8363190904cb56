//! `xdplb status` for a terminal: plain text tables, no colours.

use std::fmt::Write as _;

use lb_common::{Event, Reason};

use super::{
    format::{fmt_rate, human_bytes, human_time, last_check_text, VERIFY_NONE_WARNING},
    snapshot::Snapshot,
};
use crate::dataplane::flows::FlowView;

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

/// How a column lines up: text to the left, numbers (in `xdplb flows`) to the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A column: its header, its alignment and the width it takes at the least.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub align: Align,
    pub min_width: usize,
}

impl Column {
    pub const fn left(title: &'static str) -> Column {
        Column { title, align: Align::Left, min_width: 0 }
    }
}

/// The one table printer of the command line: a header row, then rows; each column as wide as
/// its widest cell (or its minimum), columns `gap` apart, no trailing blanks.
pub struct Table {
    columns: Vec<Column>,
    gap: &'static str,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Left-aligned columns two spaces apart, as `xdplb status` prints them.
    pub fn new(titles: &[&'static str]) -> Table {
        Table::with_columns(titles.iter().map(|t| Column::left(t)).collect(), "  ")
    }

    pub fn with_columns(columns: Vec<Column>, gap: &'static str) -> Table {
        Table { columns, gap, rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header row, then the rows.
    pub fn render(&self, out: &mut String) {
        self.write(out, true);
    }

    /// The rows only (a list of `name value` lines has no header).
    pub fn render_rows(&self, out: &mut String) {
        self.write(out, false);
    }

    fn write(&self, out: &mut String, with_header: bool) {
        let header: Vec<String> = self.columns.iter().map(|c| c.title.to_owned()).collect();
        let rows = || std::iter::once(&header).filter(|_| with_header).chain(&self.rows);
        let width: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                rows().filter_map(|r| r.get(i)).map(|cell| cell.chars().count()).fold(c.min_width, usize::max)
            })
            .collect();
        for r in rows() {
            let mut line = String::new();
            for (i, (cell, column)) in r.iter().zip(&self.columns).enumerate() {
                if i > 0 {
                    line.push_str(self.gap);
                }
                let pad = " ".repeat(width.get(i).copied().unwrap_or_default().saturating_sub(cell.chars().count()));
                match column.align {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `xdplb status` for a terminal: plain text, no colours.
pub fn table(s: &Snapshot) -> String {
    let mut o = String::new();
    let ifaces = if s.interfaces.is_empty() {
        "none".to_string()
    } else {
        term(&s.interfaces.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
    };
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
            b.status,
            b.active_up,
            b.backup_up,
            term(&b.check.to_string())
        );
        if b.verify_none {
            let _ = writeln!(o, "WARNING: {VERIFY_NONE_WARNING}");
        }
        let mut table = Table::new(&[
            "NAME",
            "ADDRESS",
            "STATUS",
            "LAST CHECK",
            "WEIGHT",
            "ACT/BCK",
            "CUR",
            "TOTAL",
            "LOCAL",
            "RATE",
            "CHKFAIL",
            "DOWNS",
        ]);
        for v in &b.servers {
            table.row(vec![
                term(&v.name),
                v.address.to_string(),
                format!("{} ({})", v.status(), human_time(v.since_s)),
                v.last_check.as_ref().map_or_else(|| "-".into(), |c| term(&last_check_text(c))),
                v.weight.to_string(),
                (if v.backup { "bck" } else { "act" }).to_string(),
                v.active_flows.to_string(),
                v.traffic.total_flows.to_string(),
                v.traffic.local_flows.to_string(),
                fmt_rate(v.traffic.new_flows_per_s),
                v.check_failures.to_string(),
                v.down_transitions.to_string(),
            ]);
        }
        table.render(&mut o);
    }
    if !s.frontends.is_empty() {
        o.push_str("\nfrontends\n");
        let mut table =
            Table::new(&["NAME", "BIND", "BACKEND", "CUR", "TOTAL", "LOCAL", "RATE", "BYTES IN", "BYTES OUT"]);
        for f in &s.frontends {
            table.row(vec![
                term(&f.name),
                term(&f.bind),
                term(&f.backend),
                f.active_flows.to_string(),
                f.traffic.total_flows.to_string(),
                f.traffic.local_flows.to_string(),
                fmt_rate(f.traffic.new_flows_per_s),
                human_bytes(f.traffic.bytes_in),
                human_bytes(f.traffic.bytes_out),
            ]);
        }
        table.render(&mut o);
    }
    o
}
/// `xdplb flows`: the connection table, addresses in columns wide enough for any IPv4 one.
pub fn flows(flows: &[FlowView]) -> String {
    let column = |title, align, min_width| Column { title, align, min_width };
    let mut table = Table::with_columns(
        vec![
            column("CLIENT", Align::Left, 22),
            column("FRONTEND", Align::Left, 22),
            column("SERVER", Align::Left, 22),
            column("STATE", Align::Left, 12),
            column("AGE(s)", Align::Right, 8),
            column("PKTS_IN", Align::Right, 10),
            column("PKTS_OUT", Align::Right, 10),
        ],
        " ",
    );
    for f in flows {
        table.row(vec![
            f.client.to_string(),
            f.frontend.to_string(),
            f.server.to_string(),
            f.state.name().to_owned(),
            (f.age_ms / 1000).to_string(),
            f.packets_in.to_string(),
            f.packets_out.to_string(),
        ]);
    }
    let mut out = String::new();
    table.render(&mut out);
    let _ = writeln!(out, "{} flow(s)", flows.len());
    out
}

/// `xdplb stats`: packets by reason, then events.
pub fn counters(reasons: &[(Reason, u64)], events: &[(Event, u64)]) -> String {
    let mut out = String::new();
    let names = [
        reasons.iter().map(|(r, n)| (r.name(), *n)).collect::<Vec<_>>(),
        events.iter().map(|(e, n)| (e.name(), *n)).collect(),
    ];
    for (i, rows) in names.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut table =
            Table::with_columns(vec![Column { title: "", align: Align::Left, min_width: 21 }, Column::left("")], " ");
        for (name, n) in rows {
            table.row(vec![(*name).to_owned(), n.to_string()]);
        }
        table.render_rows(&mut out);
    }
    out
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
                12
            } else if l.starts_with("NAME ") && l.contains("  BIND") {
                9
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
