//! `cargo xtask install` / `uninstall`: the staged tree (`stage`) put on this host under
//! /usr/local, with an example configuration never over an existing one, and back.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::stage::{self, Layout};

/// systemd runs this machine (and we install into it, not into a staging root).
fn systemd(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").exists()
}

pub fn install(build_dir: &Path, root: &Path) -> Result<()> {
    let p = stage::stage(build_dir, root, Layout::Local)?;
    if systemd(root) {
        crate::run(Command::new("systemctl").arg("daemon-reload"))?;
        println!(
            "xtask install: done. Edit {} (interfaces, servers), then: systemctl enable --now xdplb",
            p.config.display()
        );
    } else {
        println!("xtask install: done (systemd does not run here: enable the unit where it does: systemctl enable --now xdplb)");
    }
    Ok(())
}

pub fn uninstall(root: &Path) -> Result<()> {
    let p = stage::paths(root, Layout::Local);
    if systemd(root) {
        let _ = Command::new("systemctl").args(["disable", "--now", "xdplb"]).status();
    }
    if p.bin.exists() && root == Path::new("/") && Path::new("/sys/fs/bpf/xdplb").exists() {
        crate::run(Command::new(&p.bin).arg("detach")).context("detaching the data path")?;
    }
    for f in [&p.unit, &p.bin, &p.man] {
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
