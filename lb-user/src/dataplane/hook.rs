//! The host-side programs (lb-ebpf's `sock` and `egress`). The connect hook: cgroup v2 `connect4`, `getpeername4`, `connect6` and `getpeername6` programs that
//! balance connect()s made on this host, attached to a cgroup (by default the root of the
//! cgroup v2 mount: every process), their links pinned beside the XDP ones and taken over by
//! the next agent, program replaced in place (`bpf_link_update`), so local clients never meet
//! a moment without the hook.

use std::{
    fs,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use aya::{
    programs::{links::FdLink, CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};

use super::sys;

/// The hook's programs in the object, and their link pins under the pin directory.
pub const HOOKS: [(&str, &str); 4] = [
    ("xdplb_connect4", "link_connect4"),
    ("xdplb_getpeername4", "link_getpeername4"),
    ("xdplb_connect6", "link_connect6"),
    ("xdplb_getpeername6", "link_getpeername6"),
];

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no cgroup v2 file system is mounted (looked in /proc/self/mountinfo); mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or set global.local_clients = false")]
    NoCgroup2,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    #[error("cannot open the cgroup {}: {source}; set global.local_clients_cgroup to a cgroup v2 directory", path.display())]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("attaching {program} to the cgroup {}: {source}", cgroup.display())]
    Attach { program: &'static str, cgroup: PathBuf, source: Box<aya::programs::ProgramError> },
}

/// Where the cgroup v2 file system is mounted: `/sys/fs/cgroup` on a systemd host (unified),
/// `/sys/fs/cgroup/unified` on a hybrid one; the first cgroup2 mount otherwise.
pub fn cgroup2_root() -> Result<PathBuf, HookError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(HookError::MountInfo)?;
    let mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER
            let (head, tail) = line.split_once(" - ")?;
            if tail.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            head.split_whitespace().nth(4).map(PathBuf::from)
        })
        .collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| mounts.contains(p))
        .or_else(|| mounts.into_iter().next())
        .ok_or(HookError::NoCgroup2)
}

/// How the hook came to be on the cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooked {
    Attached,
    /// A previous agent's pinned link on the same cgroup, now running this agent's program.
    Adopted,
}

/// Attaches both programs to `cgroup` (or adopts the links a previous agent pinned there).
pub fn attach(ebpf: &mut Ebpf, pin_dir: &Path, cgroup: &Path) -> Result<Hooked, HookError> {
    let cg_err = |source| HookError::Cgroup { path: cgroup.to_path_buf(), source };
    let cg = fs::File::open(cgroup).map_err(cg_err)?;
    // A cgroup v2 directory's inode number is its cgroup id.
    let cg_id = cg.metadata().map_err(cg_err)?.ino();
    let mut how = Hooked::Adopted;
    for (name, pin_name) in HOOKS {
        let prog = program(ebpf, name);
        let pin = pin_dir.join(pin_name);
        if pin.exists() {
            match adopt(prog, &pin, cg_id) {
                Ok(true) => continue,
                Ok(false) => {
                    log::info!("the pinned {name} link is on another cgroup: attaching to {}", cgroup.display());
                }
                Err(e) => log::warn!("cannot adopt the pinned link {} ({e}); attaching anew", pin.display()),
            }
            // The old link goes when its last holder (the pin) does.
            let _ = fs::remove_file(&pin);
        }
        how = Hooked::Attached;
        // A bpf_link on a cgroup always runs beside the cgroup's other programs; the kernel
        // refuses any flag with it (`Single` is no flag).
        let id = prog.attach(&cg, CgroupAttachMode::Single).map_err(|source| HookError::Attach {
            program: name,
            cgroup: cgroup.to_path_buf(),
            source: Box::new(source),
        })?;
        let pinned =
            || -> Result<_, Box<dyn std::error::Error>> { Ok(FdLink::try_from(prog.take_link(id)?)?.pin(&pin)?) };
        if let Err(e) = pinned() {
            log::warn!(
                "cannot pin the {name} link at {} ({e}): local clients are served only while the agent runs",
                pin.display()
            );
        }
    }
    Ok(how)
}

/// Puts `prog` on the pinned link at `pin` if that link is on cgroup `cg_id` (true), else
/// leaves it (false).
fn adopt(prog: &CgroupSockAddr, pin: &Path, cg_id: u64) -> std::io::Result<bool> {
    let link = sys::obj_get(pin)?;
    if sys::link_cgroup_id(link.as_fd())? != Some(cg_id) {
        return Ok(false);
    }
    let fd = prog.fd().map_err(std::io::Error::other)?;
    sys::link_update(link.as_fd(), fd.as_fd())?;
    Ok(true)
}

/// The tc egress program that translates the replies of servers on this host back (lb-ebpf's
/// `egress`), on every attached interface; pinned and adopted as the hook is.
pub const EGRESS: &str = "xdplb_egress";

/// The pin of the egress link on `iface`.
pub fn egress_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_egress_{iface}"))
}

/// Attaches the egress program to `iface` (TCX, Linux 6.6+), or adopts a pinned link there;
/// true when adopted.
pub fn attach_egress(ebpf: &mut Ebpf, pin_dir: &Path, iface: &str) -> Result<bool, aya::programs::ProgramError> {
    let prog = egress_program(ebpf);
    let pin = egress_pin(pin_dir, iface);
    if pin.exists() {
        let adopted = || -> std::io::Result<()> {
            let link = sys::obj_get(&pin)?;
            let fd = prog.fd().map_err(std::io::Error::other)?;
            sys::link_update(link.as_fd(), fd.as_fd())
        };
        match adopted() {
            Ok(()) => return Ok(true),
            Err(e) => {
                log::warn!("cannot adopt the pinned link {} ({e}); attaching anew", pin.display());
                let _ = fs::remove_file(&pin);
            }
        }
    }
    let id = prog.attach(iface, aya::programs::TcAttachType::Egress)?;
    let pinned = || -> Result<_, Box<dyn std::error::Error>> { Ok(FdLink::try_from(prog.take_link(id)?)?.pin(&pin)?) };
    if let Err(e) = pinned() {
        log::warn!(
            "cannot pin the egress link at {} ({e}): replies of servers on this host are translated only while the agent runs",
            pin.display()
        );
    }
    Ok(false)
}

#[expect(
    clippy::expect_used,
    reason = "the object is the one embedded at build time, which has this tc program; no input changes that"
)]
pub fn egress_program(ebpf: &mut Ebpf) -> &mut aya::programs::SchedClassifier {
    ebpf.program_mut(EGRESS)
        .expect("the embedded object has the egress program")
        .try_into()
        .expect("the egress program is a tc classifier")
}

#[expect(
    clippy::expect_used,
    reason = "the object is the one embedded at build time, which has these cgroup programs; no input changes that"
)]
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut CgroupSockAddr {
    ebpf.program_mut(name)
        .expect("the embedded object has the connect hook's programs")
        .try_into()
        .expect("the connect hook's programs are cgroup sock_addr programs")
}
