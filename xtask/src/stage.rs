//! The installed file tree, staged once for both `cargo xtask install` (a hand install on this
//! host) and `cargo xtask package` (the tree inside the .deb): the binary, the example
//! configuration, the systemd unit, the keepalived example, the README and the man page.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{manpage, workspace};

/// Where the files go. A hand install lives under /usr/local, beside the distribution's files;
/// a Debian package never touches /usr/local (policy 9.1.2), so it uses /usr and the
/// distribution's unit folder.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Local,
    Package,
}

impl Layout {
    fn prefix(self) -> &'static str {
        match self {
            Layout::Local => "/usr/local",
            Layout::Package => "/usr",
        }
    }

    fn unit_dir(self) -> &'static str {
        match self {
            Layout::Local => "/etc/systemd/system",
            Layout::Package => "/lib/systemd/system",
        }
    }
}

/// Each installed file, as a path under `root`.
pub struct Paths {
    pub bin: PathBuf,
    pub etc: PathBuf,
    pub config: PathBuf,
    pub unit: PathBuf,
    pub doc: PathBuf,
    pub man: PathBuf,
}

/// The example configuration's path on the installed host (the package's conffile).
pub const CONFIG: &str = "/etc/xdplb/xdplb.toml";

pub fn paths(root: &Path, layout: Layout) -> Paths {
    let under = |abs: &str| root.join(abs.trim_start_matches('/'));
    let prefix = layout.prefix();
    Paths {
        bin: under(&format!("{prefix}/bin/xdplb")),
        etc: under("/etc/xdplb"),
        config: under(CONFIG),
        unit: under(&format!("{}/xdplb.service", layout.unit_dir())),
        doc: under(&format!("{prefix}/share/doc/xdplb")),
        man: under(&format!("{prefix}/share/man/man1/xdplb.1.gz")),
    }
}

pub fn write(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    // Write beside and rename: a running binary is replaced, not overwritten in place.
    let tmp = to.with_extension("xtask-new");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to)?;
    println!("xtask: staged {}", to.display());
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    write(to, &fs::read(from).with_context(|| format!("reading {}", from.display()))?, mode)
}

/// A file from packaging/ that names installed paths. They are written as `install` lays them
/// out (under /usr/local); the package's copy names them where the package puts them. Nothing
/// else changes (the unit's hardening stays as it is).
fn with_paths(name: &str, layout: Layout) -> Result<Vec<u8>> {
    let text = fs::read_to_string(workspace().join("packaging").join(name))?;
    Ok(match layout {
        Layout::Local => text,
        Layout::Package => text.replace("/usr/local/", "/usr/"),
    }
    .into_bytes())
}

/// Stages the tree under `root` from the release build in `build_dir`. An existing
/// configuration is kept as it is.
pub fn stage(build_dir: &Path, root: &Path, layout: Layout) -> Result<Paths> {
    let p = paths(root, layout);
    let pkg = workspace().join("packaging");
    let bin = build_dir.join("xdplb");
    copy(&bin, &p.bin, 0o755)?;
    fs::create_dir_all(&p.etc)?;
    fs::set_permissions(&p.etc, fs::Permissions::from_mode(0o700))?;
    if p.config.exists() {
        println!("xtask: {} exists, kept as it is", p.config.display());
    } else {
        copy(&pkg.join("xdplb.toml"), &p.config, 0o600)?;
    }
    write(&p.unit, &with_paths("xdplb.service", layout)?, 0o644)?;
    write(&p.doc.join("examples/keepalived.conf"), &with_paths("keepalived.conf.example", layout)?, 0o644)?;
    copy(&workspace().join("README.md"), &p.doc.join("README.md"), 0o644)?;
    write(&p.man, &manpage::gzip(&manpage::render(&bin, layout)?)?, 0o644)?;
    Ok(p)
}
