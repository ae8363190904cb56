//! The pin directory under bpffs: made ready (bpffs mounted, root-only directory), and removed
//! by `xdplb detach`.

use std::{
    fs, io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use lb_common::names;
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

use super::load::DataplaneError;

/// Makes sure bpffs is mounted at /sys/fs/bpf (mounting it if not) and the pin directory exists,
/// readable by root only.
pub fn prepare_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Err(DataplaneError::BpfFs(format!(
            "pin directory {} is not under /sys/fs/bpf; use e.g. /sys/fs/bpf/xdplb",
            dir.display()
        )));
    }
    if !is_bpffs(root) {
        fs::create_dir_all(root).map_err(|e| DataplaneError::BpfFs(format!("create {}: {e}", root.display())))?;
        if let Err(errno) = mount(Some("bpf"), root, Some("bpf"), MsFlags::empty(), None::<&str>) {
            return Err(DataplaneError::BpfFs(format!(
                "bpffs is not mounted at /sys/fs/bpf and mounting it failed ({}); run `mount -t bpf bpf /sys/fs/bpf` as root",
                io::Error::from(errno)
            )));
        }
        log::info!("mounted bpffs at /sys/fs/bpf");
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| DataplaneError::BpfFs(format!("create {}: {e}", dir.display())))
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Removes every pin xdplb made under `dir` (the XDP links first, which detaches the program
/// once no agent holds it, then the maps), and the directory.
pub fn remove_pins(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let links: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")))
            .collect(),
        Err(_) => Vec::new(),
    };
    for p in links.into_iter().chain(names::ALL.iter().map(|n| dir.join(n))) {
        match fs::remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
    Ok(removed)
}
