//! `cargo xtask install` / `uninstall`: the binary, an example configuration (never over an
//! existing one) and the systemd unit, and back.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::workspace;

struct Paths {
    bin: PathBuf,
    etc: PathBuf,
    unit: PathBuf,
    doc: PathBuf,
}

fn paths(root: &Path) -> Paths {
    Paths {
        bin: root.join("usr/local/bin/xdplb"),
        etc: root.join("etc/xdplb"),
        unit: root.join("etc/systemd/system/xdplb.service"),
        doc: root.join("usr/local/share/doc/xdplb"),
    }
}

/// systemd runs this machine (and we install into it, not into a staging root).
fn systemd(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").exists()
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    // Write beside and rename: a running binary is replaced, not overwritten in place.
    let tmp = to.with_extension("xtask-new");
    fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to)?;
    println!("xtask install: {}", to.display());
    Ok(())
}

pub fn install(build_dir: &Path, root: &Path) -> Result<()> {
    let p = paths(root);
    let pkg = workspace().join("packaging");
    copy(&build_dir.join("xdplb"), &p.bin, 0o755)?;
    fs::create_dir_all(&p.etc)?;
    fs::set_permissions(&p.etc, fs::Permissions::from_mode(0o700))?;
    let cfg = p.etc.join("xdplb.toml");
    if cfg.exists() {
        println!("xtask install: {} exists, kept as it is", cfg.display());
    } else {
        copy(&pkg.join("xdplb.toml"), &cfg, 0o600)?;
    }
    copy(&pkg.join("xdplb.service"), &p.unit, 0o644)?;
    copy(&workspace().join("README.md"), &p.doc.join("README.md"), 0o644)?;
    if systemd(root) {
        crate::run(Command::new("systemctl").arg("daemon-reload"))?;
        println!(
            "xtask install: done. Edit {} (interfaces, servers), then: systemctl enable --now xdplb",
            cfg.display()
        );
    } else {
        println!("xtask install: done (systemd does not run here: enable the unit where it does: systemctl enable --now xdplb)");
    }
    Ok(())
}

pub fn uninstall(root: &Path) -> Result<()> {
    let p = paths(root);
    if systemd(root) {
        let _ = Command::new("systemctl").args(["disable", "--now", "xdplb"]).status();
    }
    if p.bin.exists() && root == Path::new("/") && Path::new("/sys/fs/bpf/xdplb").exists() {
        crate::run(Command::new(&p.bin).arg("detach")).context("detaching the data path")?;
    }
    for f in [&p.unit, &p.bin] {
        match fs::remove_file(f) {
            Ok(()) => println!("xtask uninstall: removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    let _ = fs::remove_dir_all(&p.doc);
    if systemd(root) {
        crate::run(Command::new("systemctl").arg("daemon-reload"))?;
    }
    println!("xtask uninstall: done; the configuration in {} stays (remove it with rm -r)", p.etc.display());
    Ok(())
}
