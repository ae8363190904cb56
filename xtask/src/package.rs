//! `cargo xtask package`: the staged tree (`stage`, as `install` lays it out, under /usr) plus
//! Debian's control files, built into `xdplb_VERSION_ARCH.deb` with `dpkg-deb`. The package
//! needs no Rust toolchain on the host: the binary carries its XDP program.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    stage::{self, Layout},
    workspace,
};

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The shared libraries the binary links, as Debian package dependencies (libc6, libgcc-s1),
/// from `dpkg-shlibdeps`, which reads the binary's NEEDED entries and the versions of the
/// symbols it uses.
fn depends(bin: &Path) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("xdplb-shlibdeps-{}", std::process::id()));
    fs::create_dir_all(dir.join("debian"))?;
    // dpkg-shlibdeps wants a source package's control file to read; it needs only the names.
    fs::write(dir.join("debian/control"), "Source: xdplb\n\nPackage: xdplb\nArchitecture: any\n")?;
    let result = output(Command::new("dpkg-shlibdeps").args(["-O", "-e"]).arg(bin).current_dir(&dir));
    let _ = fs::remove_dir_all(&dir);
    let line = result.context("dpkg-shlibdeps (from dpkg-dev; cargo xtask setup installs it)")?;
    line.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {line}"))
}

/// Every regular file under `dir`, relative to `root`, in a stable order.
fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let path = e.path();
        if e.file_type()?.is_dir() {
            files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// Debian's changelog: one entry for this version, dated by the commit it is built from.
fn changelog(version: &str) -> Result<String> {
    let git = |args: &[&str]| output(Command::new("git").args(args).current_dir(workspace()));
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let date = git(&["log", "-1", "--format=%aD"])?;
    Ok(format!(
        "xdplb ({version}) unstable; urgency=medium\n\n  * Built from commit {commit} (its git history has the changes).\n\n -- xdplb maintainers <maintainers@users.noreply.r-seed-6f5186e8.example>  {date}\n"
    ))
}

/// Builds the package from the release build in `build_dir` into `out`; returns its path.
pub fn package(build_dir: &Path, out: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let name = format!("xdplb_{version}_{arch}");
    let root = out.join(&name);
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing the old staging tree {}", root.display()))?;
    }
    let p = stage::stage(build_dir, &root, Layout::Package)?;
    // As dh_strip does: no symbol table in the shipped binary (its XDP program is data, kept).
    crate::run(
        Command::new("strip")
            .args(["--remove-section=.comment", "--remove-section=.note", "--strip-unneeded"])
            .arg(&p.bin),
    )?;
    let deb = workspace().join("packaging/deb");
    stage::write(&p.doc.join("copyright"), &fs::read(deb.join("copyright"))?, 0o644)?;
    stage::write(&p.doc.join("changelog.gz"), &crate::manpage::gzip(&changelog(version)?)?, 0o644)?;
    stage::write(&root.join("usr/share/lintian/overrides/xdplb"), &fs::read(deb.join("lintian-overrides"))?, 0o644)?;

    let mut listed = Vec::new();
    files(&root, &root, &mut listed)?;
    let bytes: u64 = listed.iter().map(|f| fs::metadata(root.join(f)).map_or(0, |m| m.len())).sum();
    let control = fs::read_to_string(deb.join("control"))?
        .replace("@VERSION@", version)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &bytes.div_ceil(1024).to_string())
        .replace("@DEPENDS@", &depends(&p.bin)?);
    let meta = root.join("DEBIAN");
    stage::write(&meta.join("control"), control.as_bytes(), 0o644)?;
    stage::write(&meta.join("conffiles"), &fs::read(deb.join("conffiles"))?, 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        stage::write(&meta.join(script), &fs::read(deb.join(script))?, 0o755)?;
    }
    let sums = output(Command::new("md5sum").args(&listed).current_dir(&root))?;
    stage::write(&meta.join("md5sums"), format!("{sums}\n").as_bytes(), 0o644)?;

    let file = out.join(format!("{name}.deb"));
    crate::run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&root).arg(&file).env(
        "SOURCE_DATE_EPOCH",
        output(Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(workspace()))?,
    ))
    .context("dpkg-deb --build")?;
    println!("xtask package: {}", file.display());
    Ok(file)
}
