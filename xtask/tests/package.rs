//! `cargo xtask package` as an operator meets its result: the .deb installs into a scratch root
//! with dpkg, its files are where the unit expects them, the installed binary validates the
//! installed example configuration, its maintainer scripts never start the service, removal
//! keeps the configuration and purge takes it; lintian finds no error or warning.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a test's helpers as much as its tests: a panic is how a test reports its failure"
)]

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// One package for every test in this file (the release build is reused when it is current).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/package-test")).to_path_buf();
        let _ = fs::remove_dir_all(&out);
        let run = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["package", "--out"]).arg(&out).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(run.status.success(), "cargo xtask package failed:\n{text}");
        let debs: Vec<PathBuf> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        assert_eq!(debs.len(), 1, "one .deb in {}: {debs:?}", out.display());
        let name = debs[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("xdplb_{}_", env!("CARGO_PKG_VERSION"))),
            "version from the workspace: {name}"
        );
        debs[0].clone()
    })
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A root for dpkg: an empty database, except the packages the .deb depends on, copied from
/// this host's database so that dpkg checks the Depends field instead of being forced past it.
/// Maintainer scripts run outside a chroot (the scratch root has no shell) with DPKG_ROOT set;
/// `run/systemd/system` makes them believe systemd runs, and `systemctl` and
/// `deb-systemd-invoke` are stand-ins that write down what they were asked.
struct Scratch {
    root: PathBuf,
    fakes: PathBuf,
    calls: PathBuf,
}

impl Scratch {
    fn new(deps: &[&str]) -> Scratch {
        let base = std::env::temp_dir().join(format!("xdplb-scratch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("root");
        let admin = root.join("var/lib/dpkg");
        for d in ["info", "updates"] {
            fs::create_dir_all(admin.join(d)).unwrap();
        }
        let status: String = deps.iter().map(|p| output(Command::new("dpkg-query").args(["-s", p])) + "\n").collect();
        fs::write(admin.join("status"), status).unwrap();
        fs::write(admin.join("available"), "").unwrap();
        fs::create_dir_all(root.join("run/systemd/system")).unwrap();
        let fakes = base.join("bin");
        fs::create_dir_all(&fakes).unwrap();
        let calls = base.join("calls");
        for tool in ["systemctl", "deb-systemd-invoke"] {
            let path = fakes.join(tool);
            fs::write(&path, format!("#!/bin/sh\necho \"{tool} $*\" >> {}\n", calls.display())).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Scratch { root, fakes, calls }
    }

    fn dpkg(&self, args: &[&str]) -> String {
        let path = format!("{}:{}", self.fakes.display(), std::env::var("PATH").unwrap_or_default());
        output(
            Command::new("dpkg")
                .arg(format!("--root={}", self.root.display()))
                .arg("--force-script-chrootless")
                .args(args)
                .env("PATH", path),
        )
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// What the maintainer scripts asked systemd since the last call.
    fn calls(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.calls).unwrap_or_default();
        let _ = fs::remove_file(&self.calls);
        text.lines().map(str::to_string).collect()
    }

    fn status(&self) -> String {
        let out = Command::new("dpkg-query")
            .arg(format!("--admindir={}", self.root.join("var/lib/dpkg").display()))
            .args(["-W", "-f=${db:Status-Abbrev}", "xdplb"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.root.parent().unwrap());
    }
}

/// The packages that ship the shared libraries `bin` loads (ldd resolves them on this host).
fn library_packages(bin: &Path) -> BTreeSet<String> {
    output(Command::new("ldd").arg(bin))
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(|lib| {
            let owner = output(Command::new("dpkg-query").args(["-S", lib]));
            owner.split(':').next().unwrap().trim().to_string()
        })
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    output(Command::new("dpkg-deb").args(["-f"]).arg(deb).arg(name)).trim().to_string()
}

/// Every file the unit names is in the installed tree: the binary it runs (executable), the
/// configuration it reads, the documentation it points at; and the other documentation.
fn files_are_where_the_unit_expects_them(s: &Scratch) {
    let unit = fs::read_to_string(s.path("/lib/systemd/system/xdplb.service")).unwrap();
    let shipped = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/xdplb.service")).unwrap();
    assert_eq!(unit, shipped.replace("/usr/local/", "/usr/"), "the shipped unit, only its paths moved to /usr");
    let mut named = BTreeSet::new();
    for line in unit.lines() {
        for key in ["ExecStartPre=", "ExecStart=", "ExecReload="] {
            if let Some(cmd) = line.strip_prefix(key) {
                let mut words = cmd.split_whitespace();
                named.insert(words.next().unwrap().to_string());
                named.extend(words.filter(|w| w.starts_with('/')).map(str::to_string));
            }
        }
        if let Some(doc) = line.strip_prefix("Documentation=file://") {
            named.insert(doc.to_string());
        }
    }
    assert_eq!(
        named,
        BTreeSet::from(["/usr/bin/xdplb", "/etc/xdplb/xdplb.toml", "/usr/share/doc/xdplb/README.md"].map(String::from)),
        "{unit}"
    );
    for f in &named {
        assert!(s.path(f).is_file(), "{f}, named by the unit, is not installed");
    }
    let bin = s.path("/usr/bin/xdplb");
    assert_eq!(fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);
    for f in [
        "/usr/share/man/man1/xdplb.1.gz",
        "/usr/share/doc/xdplb/copyright",
        "/usr/share/doc/xdplb/changelog.gz",
        "/usr/share/doc/xdplb/examples/keepalived.conf",
    ] {
        assert!(s.path(f).is_file(), "{f} is not installed");
    }
    let keepalived = fs::read_to_string(s.path("/usr/share/doc/xdplb/examples/keepalived.conf")).unwrap();
    assert!(
        keepalived.contains("script \"/usr/bin/xdplb status\"") && keepalived.contains("track_script"),
        "{keepalived}"
    );
    // The man page documents every command the binary has.
    let man = output(
        Command::new("sh").arg("-c").arg(format!("zcat {}", s.path("/usr/share/man/man1/xdplb.1.gz").display())),
    );
    for cmd in ["run", "check\\-config", "import\\-haproxy", "status", "runtime", "detach"] {
        assert!(man.contains(&format!(".SS \"xdplb {cmd}\"")), "xdplb {cmd} missing from the man page");
    }
}

/// The binary needs no Rust toolchain, only what Depends names: every shared library it loads
/// belongs to a package in Depends. It is stripped, and its XDP program survived the strip.
fn binary_needs_only_its_depends(bin: &Path, deps: &[&str], depends: &str) {
    assert!(!output(Command::new("readelf").arg("-S").arg(bin)).contains(".symtab"), "the shipped binary is stripped");
    // The XDP program survived the strip: the installed binary holds the object the build made.
    let installed = fs::read(bin).unwrap();
    let objects: Vec<Vec<u8>> = fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/build"))
        .unwrap()
        .map(|e| e.unwrap().path().join("out/lb-ebpf"))
        .filter(|p| p.parent().unwrap().parent().unwrap().to_string_lossy().contains("lb-user-"))
        .filter_map(|p| fs::read(p).ok())
        .collect();
    assert!(
        objects.iter().any(|o| !o.is_empty() && installed.windows(o.len()).any(|w| w == o.as_slice())),
        "no XDP object of the release build is inside the installed binary (built with AYA_BUILD_SKIP?)"
    );
    let needed = library_packages(bin);
    assert!(!needed.is_empty());
    for pkg in &needed {
        assert!(deps.contains(&pkg.as_str()), "{pkg} (a library xdplb loads) is not in Depends: {depends}");
    }
}

#[test]
fn the_package_installs_checks_its_config_and_removes_cleanly() {
    let deb = deb();
    let depends = field(deb, "Depends");
    let deps: Vec<&str> = depends.split(',').map(|d| d.split_whitespace().next().unwrap()).collect();
    let s = Scratch::new(&deps);

    s.dpkg(&["--install", deb.to_str().unwrap()]);
    assert_eq!(s.status(), "ii", "installed and configured");
    assert_eq!(s.calls(), ["systemctl daemon-reload"], "a first install reloads systemd and starts nothing");

    files_are_where_the_unit_expects_them(&s);
    let bin = s.path("/usr/bin/xdplb");
    binary_needs_only_its_depends(&bin, &deps, &depends);

    // The installed binary accepts the installed example, with a bare environment.
    let conf = s.path("/etc/xdplb/xdplb.toml");
    let check =
        Command::new(&bin).arg("check-config").arg(&conf).env_clear().env("PATH", "/usr/bin:/bin").output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check-config of the example: {}", String::from_utf8_lossy(&check.stderr));
    assert!(text.contains("name = \"apiserver-cluster\"") && text.contains("name = \"etcd-cluster\""), "{text}");
    assert_eq!(fs::metadata(&conf).unwrap().permissions().mode() & 0o777, 0o600);

    // Reinstalling over itself is an upgrade: a running agent is restarted, a stopped one not.
    s.dpkg(&["--install", deb.to_str().unwrap()]);
    assert_eq!(s.calls(), ["systemctl daemon-reload", "deb-systemd-invoke try-restart xdplb.service"]);

    // Remove: the service stops, the program files go, the edited configuration stays.
    let edited = fs::read_to_string(&conf).unwrap().replace("interfaces = [\"eth0\"]", "interfaces = [\"bond0\"]");
    fs::write(&conf, &edited).unwrap();
    fs::create_dir_all(s.path("/var/lib/xdplb")).unwrap();
    fs::write(s.path("/var/lib/xdplb/state.json"), "{}").unwrap();
    s.dpkg(&["--remove", "xdplb"]);
    assert_eq!(s.status(), "rc", "removed, configuration kept");
    assert_eq!(s.calls(), ["deb-systemd-invoke stop xdplb.service", "systemctl daemon-reload"]);
    for f in [
        "/usr/bin/xdplb",
        "/lib/systemd/system/xdplb.service",
        "/usr/share/man/man1/xdplb.1.gz",
        "/usr/share/doc/xdplb",
    ] {
        assert!(!s.path(f).exists(), "{f} is still there after remove");
    }
    assert_eq!(fs::read_to_string(&conf).unwrap(), edited, "the operator's configuration survives remove");
    assert!(s.path("/var/lib/xdplb/state.json").exists(), "the state survives remove");

    // Purge: the configuration and the agent's state go too.
    s.dpkg(&["--purge", "xdplb"]);
    assert_eq!(s.status(), "", "purged: dpkg no longer knows xdplb");
    assert_eq!(s.calls(), ["systemctl daemon-reload"]);
    for f in ["/etc/xdplb", "/var/lib/xdplb"] {
        assert!(!s.path(f).exists(), "{f} is still there after purge");
    }
}

#[test]
fn lintian_finds_no_error_or_warning_in_the_package() {
    let out = Command::new("lintian")
        .args(["--info", "--pedantic", "--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(deb())
        .output()
        .expect("lintian (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lintian:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")), "{text}");
}

/// keepalived's own `--config-test` reads the packaged example, in a network namespace that has
/// the interface it names; keepalived reports each problem as "(FILE: Line N) ...". A copy with
/// a misspelt keyword shows that the check sees problems.
#[test]
fn keepalived_accepts_the_packaged_example() {
    let example = deb().with_extension("").join("usr/share/doc/xdplb/examples/keepalived.conf");
    let text = fs::read_to_string(&example).unwrap();
    let broken = example.with_file_name("keepalived-broken.conf");
    fs::write(&broken, text.replace("virtual_router_id", "virtual_router_identifier")).unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let ns = NetNs(format!("xdplb-pkg-{}-{nanos:08x}", std::process::id()));
    output(Command::new("ip").args(["netns", "add", &ns.0]));
    output(Command::new("ip").args(["-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]));
    output(Command::new("ip").args(["-n", &ns.0, "link", "set", "eth0", "up"]));
    let test = |file: &Path| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "keepalived", "--config-test", "--log-console", "--use-file"])
            .arg(file)
            .output()
            .expect("keepalived (cargo xtask setup installs it)");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let problems = |log: &str| log.lines().filter(|l| l.contains(": Line ") || l.contains("WARNING")).count();
    let log = test(&example);
    assert_eq!(problems(&log), 0, "keepalived --config-test on the example:\n{log}");
    let log = test(&broken);
    assert!(problems(&log) > 0, "a misspelt keyword goes unnoticed:\n{log}");
}

struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
