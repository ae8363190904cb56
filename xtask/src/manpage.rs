//! xdplb(1), written from the built binary's own `--help` (the clap definitions), so the page
//! cannot drift from the command line: the overview, then every command's help, recursively.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::stage::{self, Layout};

fn help(bin: &Path, command: &[String]) -> Result<String> {
    let out = Command::new(bin)
        .args(command)
        .arg("--help")
        .env("COLUMNS", "80")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    if !out.status.success() {
        bail!("{} {} --help failed: {}", bin.display(), command.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The command names listed under "Commands:" in clap's help (without `help` itself).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Text as roff reads it: backslashes escaped, and no line starting with a control character.
fn escape(line: &str) -> String {
    let line = line.replace('\\', "\\e").replace('-', "\\-");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

fn verbatim(out: &mut String, text: &str) {
    out.push_str(".nf\n");
    for line in text.trim_end().lines() {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
}

fn commands(bin: &Path, parent: &[String], page: &mut String) -> Result<()> {
    for name in subcommands(&help(bin, parent)?) {
        let path: Vec<String> = parent.iter().cloned().chain([name]).collect();
        let text = help(bin, &path)?;
        writeln!(page, ".SS \"xdplb {}\"", escape(&path.join(" ")))?;
        verbatim(page, &text);
        commands(bin, &path, page)?;
    }
    Ok(())
}

/// The man page's roff source.
pub fn render(bin: &Path, layout: Layout) -> Result<String> {
    let top = help(bin, &[])?;
    let about = top.lines().next().unwrap_or_default().trim().to_string();
    let version = String::from_utf8(Command::new(bin).arg("--version").output()?.stdout)?;
    let version = version.trim();
    let host = stage::paths(Path::new("/"), layout);
    let mut page = format!(
        ".TH XDPLB 1 \"\" \"{}\" \"User Commands\"\n.SH NAME\nxdplb \\- {}\n.SH SYNOPSIS\n.B xdplb\n.I COMMAND\n[\\fIOPTIONS\\fR]\n.SH DESCRIPTION\n",
        escape(version),
        escape(&about),
    );
    verbatim(&mut page, top.lines().skip(1).collect::<Vec<_>>().join("\n").trim());
    page.push_str(".SH COMMANDS\n");
    commands(bin, &[], &mut page)?;
    write!(
        page,
        ".SH FILES\n.TP\n.I {}\nThe configuration (an example until edited; \\fBxdplb check\\-config\\fR validates it).\n.TP\n.I {}\nThe systemd unit: \\fBsystemctl enable \\-\\-now xdplb\\fR.\n.TP\n.I {}\nThe operator's guide (README.md) and examples/keepalived.conf.\n.SH \"SEE ALSO\"\n.BR systemctl (1),\n.BR keepalived (8),\n.BR bpftool (8)\n",
        escape(stage::CONFIG),
        escape(&host.unit.display().to_string()),
        escape(&host.doc.display().to_string()),
    )?;
    Ok(page)
}

/// `gzip -9n`: no name or time stamp inside, so the same page compresses to the same bytes.
pub fn gzip(text: &str) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    child.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}
