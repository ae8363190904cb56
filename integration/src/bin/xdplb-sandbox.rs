//! Runs a command under the restrictions a systemd unit file asks for, without systemd (which is
//! not PID 1 on the machines the tests run on): what the shipped `xdplb.service` says is read
//! from the file itself, so that the test and the unit cannot drift apart.
//!
//! Reproduced: `CapabilityBoundingSet` (the bounding set; inheritable and ambient cleared),
//! `NoNewPrivileges`, `SystemCallFilter` (the same allow list, groups expanded by
//! `systemd-analyze syscall-filter`, others failing with `SystemCallErrorNumber`),
//! `SystemCallArchitectures=native`, `RestrictAddressFamilies` (on `socket()`),
//! `MemoryDenyWriteExecute` (on `mmap`/`mprotect`), `ProtectSystem=strict` (every mount
//! read-only but /dev, /proc and /sys), `ProtectKernelTunables` (/proc/sys and /sys read-only),
//! `ReadWritePaths`, `RuntimeDirectory` and `StateDirectory` (writable), `LimitNOFILE`,
//! `LimitMEMLOCK` and `UMask`, all in a private mount namespace (`PrivateMounts`).
//! Not reproduced (said on stderr): device, home, tmp and /proc hiding, namespaces, realtime,
//! SUID, personality, clock and hostname protection.
//!
//! `xdplb-sandbox --unit FILE [--rw PATH]... -- COMMAND [ARGS]...`

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
};

use anyhow::{bail, Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// The `[Service]` settings of a unit, each key with its values in order.
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.trim().to_owned()).or_default().push(v.trim().to_owned());
        }
    }
    out
}

fn yes(s: &BTreeMap<String, Vec<String>>, key: &str) -> bool {
    s.get(key).and_then(|v| v.last()).is_some_and(|v| matches!(v.as_str(), "yes" | "true" | "1" | "strict"))
}

fn words(s: &BTreeMap<String, Vec<String>>, key: &str) -> Vec<String> {
    s.get(key).into_iter().flatten().flat_map(|v| v.split_whitespace().map(str::to_owned)).collect()
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc != 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn bind_self(p: &Path, recursive: bool) -> Result<()> {
    let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
    let c = cstr(p);
    check(
        unsafe { libc::mount(c.as_ptr(), c.as_ptr(), std::ptr::null(), flags, std::ptr::null()) },
        &format!("bind {}", p.display()),
    )
}

/// The mount points in order, with their per-mount flags (`ro`, `nosuid`, ...).
fn mounts() -> Result<Vec<(PathBuf, Vec<String>)>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let point = f.get(4)?.replace("\\040", " ");
            Some((PathBuf::from(point), f.get(5)?.split(',').map(str::to_owned).collect()))
        })
        .collect())
}

fn remount_ro(p: &Path, opts: &[String]) -> Result<()> {
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (name, bit) in [
        ("nosuid", libc::MS_NOSUID),
        ("nodev", libc::MS_NODEV),
        ("noexec", libc::MS_NOEXEC),
        ("noatime", libc::MS_NOATIME),
        ("nodiratime", libc::MS_NODIRATIME),
        ("relatime", libc::MS_RELATIME),
    ] {
        if opts.iter().any(|o| o == name) {
            flags |= bit;
        }
    }
    let c = cstr(p);
    check(
        unsafe { libc::mount(std::ptr::null(), c.as_ptr(), std::ptr::null(), flags, std::ptr::null()) },
        &format!("read-only {}", p.display()),
    )
}

/// Every system call in `group` (`@system-service`), groups within it expanded.
fn syscall_group(group: &str, seen: &mut BTreeSet<String>, out: &mut BTreeSet<String>) -> Result<()> {
    if !seen.insert(group.to_owned()) {
        return Ok(());
    }
    let o = Command::new("systemd-analyze").args(["syscall-filter", group]).output().context("systemd-analyze")?;
    if !o.status.success() {
        bail!("systemd-analyze syscall-filter {group}: {}", String::from_utf8_lossy(&o.stderr));
    }
    for line in String::from_utf8_lossy(&o.stdout).lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            syscall_group(line, seen, out)?;
        } else {
            out.insert(line.to_owned());
        }
    }
    Ok(())
}

/// The allow list `SystemCallFilter=` lines make: allow entries add, `~` entries remove.
fn allowed_syscalls(filters: &[String]) -> Result<BTreeSet<String>> {
    let mut allowed = BTreeSet::new();
    for line in filters {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        let mut names = BTreeSet::new();
        for item in list.split_whitespace() {
            if item.starts_with('@') {
                syscall_group(item, &mut BTreeSet::new(), &mut names)?;
            } else {
                names.insert(item.to_owned());
            }
        }
        if deny {
            allowed.retain(|n| !names.contains(n));
        } else {
            allowed.extend(names);
        }
    }
    Ok(allowed)
}

fn family(name: &str) -> Option<i32> {
    Some(match name {
        "AF_UNIX" => libc::AF_UNIX,
        "AF_INET" => libc::AF_INET,
        "AF_INET6" => libc::AF_INET6,
        "AF_NETLINK" => libc::AF_NETLINK,
        "AF_PACKET" => libc::AF_PACKET,
        _ => return None,
    })
}

fn errno(name: &str) -> u32 {
    match name {
        "EACCES" => libc::EACCES as u32,
        "ENOSYS" => libc::ENOSYS as u32,
        _ => libc::EPERM as u32,
    }
}

fn seccomp(s: &BTreeMap<String, Vec<String>>) -> Result<Option<BpfProgram>> {
    let filters = s.get("SystemCallFilter").cloned().unwrap_or_default();
    if filters.is_empty() {
        return Ok(None);
    }
    let refuse = SeccompAction::Errno(errno(
        s.get("SystemCallErrorNumber").and_then(|v| v.last()).map_or("EPERM", String::as_str),
    ));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in allowed_syscalls(&filters)? {
        // Names of other architectures (and the 32-bit ones) do not exist here.
        if let Ok(no) = syscalls::Sysno::from_str(&name) {
            rules.insert(no as i64, Vec::new());
        }
    }
    let arg = |i: u8, op: SeccompCmpOp, v: u64| SeccompCondition::new(i, SeccompCmpArgLen::Dword, op, v).unwrap();
    let families: Vec<i32> = words(s, "RestrictAddressFamilies").iter().filter_map(|f| family(f)).collect();
    if !families.is_empty() && rules.contains_key(&libc::SYS_socket) {
        let r = families.iter().map(|&f| SeccompRule::new(vec![arg(0, SeccompCmpOp::Eq, f as u64)]).unwrap()).collect();
        rules.insert(libc::SYS_socket, r);
    }
    if yes(s, "MemoryDenyWriteExecute") {
        let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        for (sys, idx) in [(libc::SYS_mmap, 2), (libc::SYS_mprotect, 2), (libc::SYS_pkey_mprotect, 2)] {
            if rules.contains_key(&sys) {
                let r = [0, libc::PROT_WRITE as u64, libc::PROT_EXEC as u64]
                    .iter()
                    .map(|&v| SeccompRule::new(vec![arg(idx, SeccompCmpOp::MaskedEq(wx), v)]).unwrap())
                    .collect();
                rules.insert(sys, r);
            }
        }
    }
    let filter = SeccompFilter::new(rules, refuse, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(Some(filter.try_into()?))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split =
        args.iter().position(|a| a == "--").context("usage: xdplb-sandbox --unit FILE [--rw PATH]... -- COMMAND")?;
    let (ours, command) = args.split_at(split);
    let command = &command[1..];
    let mut unit = None;
    let mut rw: Vec<PathBuf> = Vec::new();
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--unit" => unit = it.next().map(PathBuf::from),
            "--rw" => rw.extend(it.next().map(PathBuf::from)),
            other => bail!("unknown argument {other}"),
        }
    }
    let unit = unit.context("--unit FILE")?;
    let s = service_settings(&std::fs::read_to_string(&unit).with_context(|| unit.display().to_string())?);
    let filter = seccomp(&s)?;

    // Writable paths: ReadWritePaths (`-` prefix: ignored when missing), the runtime and state
    // directories systemd would make, and the test's own.
    for p in words(&s, "ReadWritePaths") {
        let optional = p.starts_with('-');
        let p = PathBuf::from(p.trim_start_matches(['-', '+']));
        if p.exists() || !optional {
            rw.push(p);
        }
    }
    for d in words(&s, "RuntimeDirectory") {
        rw.push(Path::new("/run").join(d));
    }
    for d in words(&s, "StateDirectory") {
        rw.push(Path::new("/var/lib").join(d));
    }
    for p in &rw {
        if !p.exists() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
    }

    // A mount namespace of its own, nothing propagating back.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare(CLONE_NEWNS)")?;
    let root = CString::new("/").unwrap();
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        },
        "make / private",
    )?;
    let tunables = yes(&s, "ProtectKernelTunables");
    let strict = s.get("ProtectSystem").and_then(|v| v.last()).is_some_and(|v| v == "strict");
    if tunables {
        bind_self(Path::new("/proc/sys"), true)?;
        bind_self(Path::new("/sys"), true)?;
    }
    for p in &rw {
        bind_self(p, true)?;
    }
    let under = |m: &Path, dirs: &[&Path]| dirs.iter().any(|d| m.starts_with(d));
    let rw_refs: Vec<&Path> = rw.iter().map(PathBuf::as_path).collect();
    let mut skipped = Vec::new();
    for (point, opts) in mounts()? {
        if under(&point, &rw_refs) || opts.iter().any(|o| o == "ro") {
            continue;
        }
        let kernel = under(&point, &[Path::new("/proc/sys"), Path::new("/sys")]);
        let api = under(&point, &[Path::new("/proc"), Path::new("/sys"), Path::new("/dev")]);
        if (tunables && kernel) || (strict && !api) {
            if let Err(e) = remount_ro(&point, &opts) {
                skipped.push(format!("{e}"));
            }
        }
    }
    if !skipped.is_empty() {
        eprintln!("xdplb-sandbox: left writable (cannot remount): {}", skipped.join("; "));
    }

    // Limits and umask.
    for (key, res) in [("LimitNOFILE", libc::RLIMIT_NOFILE), ("LimitMEMLOCK", libc::RLIMIT_MEMLOCK)] {
        if let Some(v) = s.get(key).and_then(|v| v.last()) {
            let n =
                if v == "infinity" { libc::RLIM_INFINITY } else { v.parse().with_context(|| format!("{key}={v}"))? };
            let l = libc::rlimit { rlim_cur: n, rlim_max: n };
            if unsafe { libc::setrlimit(res, &l) } != 0 {
                // A container may cap the hard limit below the unit's: take what there is.
                let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                unsafe { libc::getrlimit(res, &mut now) };
                let l = libc::rlimit { rlim_cur: now.rlim_max.min(n), rlim_max: now.rlim_max.min(n) };
                check(unsafe { libc::setrlimit(res, &l) }, key)?;
                eprintln!("xdplb-sandbox: {key}={v} is above this machine's hard limit; {} used", l.rlim_max);
            }
        }
    }
    if let Some(m) = s.get("UMask").and_then(|v| v.last()) {
        unsafe { libc::umask(u32::from_str_radix(m, 8)?) };
    }

    // Capabilities: the bounding set is what root keeps across execve.
    let keep: Vec<caps::Capability> = words(&s, "CapabilityBoundingSet")
        .iter()
        .map(|c| caps::Capability::from_str(c).map_err(|e| anyhow::anyhow!("{c}: {e}")))
        .collect::<Result<_>>()?;
    if s.contains_key("CapabilityBoundingSet") {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(|e| anyhow::anyhow!("drop {cap}: {e}"))?;
            }
        }
        caps::clear(None, caps::CapSet::Inheritable).map_err(|e| anyhow::anyhow!("{e}"))?;
        caps::clear(None, caps::CapSet::Ambient).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if yes(&s, "NoNewPrivileges") {
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "PR_SET_NO_NEW_PRIVS")?;
    }
    eprintln!(
        "xdplb-sandbox: not reproduced: PrivateDevices, ProtectHome, PrivateTmp, ProtectProc, RestrictNamespaces, RestrictRealtime, RestrictSUIDSGID, LockPersonality, ProtectClock, ProtectHostname"
    );
    // The filter last: from here on, only what the unit allows.
    if let Some(f) = &filter {
        seccompiler::apply_filter(f)?;
    }
    // `-- @probe`: says what `ptrace(PTRACE_TRACEME)` (outside @system-service, harmless, and
    // allowed to any process without a filter) returns here.
    if command.first().map(String::as_str) == Some("@probe") {
        let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        println!(
            "ptrace: {}",
            if rc == 0 { "allowed".to_owned() } else { std::io::Error::last_os_error().to_string() }
        );
        return Ok(());
    }
    let program = CString::new(command.first().context("no command")?.as_str())?;
    let argv: Vec<CString> = command.iter().map(|a| CString::new(a.as_str()).unwrap()).collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    unsafe { libc::execvp(program.as_ptr(), ptrs.as_ptr()) };
    bail!("exec {}: {}", command[0], std::io::Error::last_os_error())
}
