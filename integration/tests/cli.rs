//! The command line as an operator meets it: import the seed's haproxy.cfg, validate the result,
//! and get exit code 2 with the place and the fix for a broken configuration.

use std::{path::PathBuf, process::Command};

use integration::agent::xdplb_bin;

fn xdplb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(xdplb_bin().unwrap()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_seeds_haproxy_cfg_imports_to_a_valid_config() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-haproxy.cfg");
    let (code, toml, notes) = xdplb(&["import-haproxy", seed]);
    assert_eq!(code, 0, "{notes}");
    assert!(notes.contains("ignores the status"), "the importer says why it adds the status: {notes}");
    let file = tmp("imported.toml", &toml);
    let (code, effective, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "bind = \"*:12379\"",
        "bind = \"*:16443\"",
        "path = \"/healthz\"",
        "expect_string = \"ok\"",
        "expect_status = \"200-399\"",
        "inter = \"2s\"",
        "verify = \"none\"",
    ] {
        assert!(effective.contains(want), "missing {want} in:\n{effective}");
    }
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[test]
fn a_node_local_loopback_bind_is_imported_and_served_by_the_connect_hook() {
    // kubespray's node-local load balancer: every node's kubelet dials 127.0.0.1:6443.
    let cfg = tmp(
        "haproxy.cfg",
        "frontend kube_api_frontend\n  bind 127.0.0.1:6443\n  mode tcp\n  default_backend kube_api_backend\n\nbackend kube_api_backend\n  mode tcp\n  balance leastconn\n  server m1 198.18.0.21:6443 check\n  server m2 198.18.0.22:6443 check\n",
    );
    let (code, toml, notes) = xdplb(&["import-haproxy", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{notes}");
    assert!(toml.contains("bind = \"127.0.0.1:6443\"") && toml.contains("local_clients = true"), "{toml}");
    assert!(
        notes.contains(
            "bind 127.0.0.1:6443: only processes on this host reach it; xdplb serves them with its connect hook"
        ),
        "{notes}"
    );
    let file = tmp("imported.toml", &toml);
    let (code, out, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("local_clients = true"), "{out}");
    // Without the hook nothing would serve it: refused, with the reason.
    let off = tmp("off.toml", &toml.replace("local_clients = true", "local_clients = false"));
    let (code, _, err) = xdplb(&["check-config", off.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only processes on this host reach a loopback address"), "{err}");
    for f in [cfg, file, off] {
        let _ = std::fs::remove_dir_all(f.parent().unwrap());
    }
}

#[test]
fn haproxys_stats_page_and_its_password_are_imported() {
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-haproxy.cfg")).unwrap();
    let cfg = tmp(
        "haproxy.cfg",
        &format!("listen stats\n  bind *:8404\n  mode http\n  stats enable\n  stats uri /\n  stats auth admin:s3cret\n\n{seed}"),
    );
    let (code, toml, notes) = xdplb(&["import-haproxy", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{notes}");
    assert!(
        notes.contains("HAProxy's stats page becomes xdplb's status page, /metrics and /status.json on 0.0.0.0:8404"),
        "{notes}"
    );
    assert!(toml.contains("stats_bind = \"0.0.0.0:8404\"") && toml.contains("stats_auth = \"admin:s3cret\""), "{toml}");
    assert!(!toml.contains("name = \"stats\""), "the stats page is no frontend: {toml}");
    // A public page with its password: accepted, and the password not printed.
    let file = tmp("imported.toml", &toml);
    let (code, out, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stats_auth = \"admin:<hidden>\"") && !out.contains("s3cret"), "{out}");
    for f in [cfg, file] {
        let _ = std::fs::remove_dir_all(f.parent().unwrap());
    }
}

#[test]
fn import_refuses_a_translation_that_loses_traffic_unless_told_to_accept_it() {
    // TLS terminated by HAProxy: xdplb would hand the servers the client's TLS unchanged.
    let cfg = tmp(
        "haproxy.cfg",
        "frontend api\n bind *:6443 ssl crt /etc/haproxy/api.pem\n mode tcp\n default_backend api\nbackend api\n option httpchk GET /healthz\n http-check connect ssl\n server a 198.18.0.21:6443 check verify none\n",
    );
    let out = cfg.with_file_name("imported.toml");
    let (out_s, cfg_s) = (out.to_str().unwrap(), cfg.to_str().unwrap());
    let (code, toml, notes) = xdplb(&["import-haproxy", cfg_s, "--iface", "eth0", "-o", out_s]);
    assert_eq!(code, 2, "{notes}");
    assert!(
        notes.contains("error: line 2: `bind ... ssl crt /etc/haproxy/api.pem`: HAProxy terminates TLS here"),
        "{notes}"
    );
    assert!(notes.contains("1 error note above") && notes.contains("--accept-differences"), "{notes}");
    assert!(toml.is_empty() && !out.exists(), "nothing written: {toml}");

    let (code, _, notes) = xdplb(&["import-haproxy", cfg_s, "--iface", "eth0", "-o", out_s, "--accept-differences"]);
    assert_eq!(code, 0, "{notes}");
    let text = std::fs::read_to_string(&out).unwrap();
    // The error heads the file, before the notes that do not lose anything.
    let (error, info) = (text.find("#   - error: line 2:").unwrap(), text.find("#   - info:").unwrap());
    assert!(error < info, "{text}");
    assert!(text.contains("interfaces = [\"eth0\"]") && text.contains("type = \"https\""), "{text}");
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
}

#[test]
fn a_broken_config_is_refused_with_exit_code_2_and_every_problem() {
    let file = tmp(
        "bad.toml",
        "[[frontend]]\nname = \"f\"\nbind = \"*:70000\"\nbackend = \"nope\"\n[[backend]]\nname = \"b\"\ncheck = { rise = 0 }\nserver = [ { name = \"s\", address = \"198.18.0.21\" } ]\n",
    );
    let (code, _, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for want in [
        file.to_str().unwrap(),
        "frontend[0] \"f\".bind",
        "no [[backend]] named \"nope\"",
        "rise = 0",
        "server[0] \"s\".address",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // `run` refuses the same config before touching anything.
    let (code, _, err) =
        xdplb(&["run", "--config", file.to_str().unwrap(), "--iface", "lo", "--pin-dir", "/sys/fs/bpf/xdplb-never"]);
    assert_eq!(code, 2, "{err}");
    assert!(!std::path::Path::new("/sys/fs/bpf/xdplb-never").exists(), "nothing pinned");
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[test]
fn the_installed_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/xdplb.toml");
    let (code, effective, err) = xdplb(&["check-config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(effective.contains("bind = \"*:12379\"") && effective.contains("bind = \"*:16443\""));
    // Secure defaults: the status page on loopback, the runtime socket in root's /run/xdplb.
    assert!(effective.contains("stats_bind = \"127.0.0.1:8404\""), "{effective}");
    assert!(effective.contains("runtime_socket = \"/run/xdplb/xdplb.sock\""), "{effective}");
}

/// A valid base with one frontend and one backend; each case breaks one thing.
const BASE: &str = "[global]\n[[frontend]]\nname = \"f\"\nbind = \"*:12379\"\nbackend = \"b\"\n[[backend]]\nname = \"b\"\nserver = [ { name = \"s\", address = \"198.18.0.21:2379\" } ]\n";

/// Files the TLS cases point at: a CA, a client certificate, its key (0600), the same key
/// readable by others (0644), and garbage in PEM files' clothing (0600).
struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    fn new() -> TlsFiles {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-cli-tls-"));
        let ca = integration::pki::Ca::new("cli test CA").unwrap();
        ca.write(&dir).unwrap();
        let (_, key) = ca.client("xdplb").unwrap().write(&dir, "client").unwrap();
        let exposed = dir.join("exposed-key.pem");
        std::fs::copy(&key, &exposed).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n").unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "this is not PEM at all\n").unwrap();
        for (f, mode) in [(&key, 0o600), (&exposed, 0o644), (&garbage, 0o600), (&junk, 0o600)] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        TlsFiles { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn broken_configs_are_refused_with_place_and_fix() {
    let f = TlsFiles::new();
    let check = |c: &str| BASE.replace("name = \"b\"\n", &format!("name = \"b\"\ncheck = {{ {c} }}\n"));
    let client = |key: &str| format!("crt = \"{}\", key = \"{}\"", f.path("client.pem"), f.path(key));
    let cases: &[(&str, String, &str)] = &[
        ("syntax error", "[[frontend]\n".into(), "line 1"),
        (
            "unknown key",
            BASE.replace("[global]\n", "[global]\nintrefaces = [\"eth0\"]\n"),
            "unknown field `intrefaces`",
        ),
        (
            "duplicate name",
            format!("{BASE}[[frontend]]\nname = \"f\"\nbind = \"*:2000\"\nbackend = \"b\"\n"),
            "duplicate frontend name",
        ),
        ("port 0", BASE.replace("*:12379", "*:0"), "frontend[0] \"f\".bind"),
        ("port > 65535", BASE.replace("*:12379", "*:70000"), "port 1-65535"),
        ("server without address", BASE.replace(", address = \"198.18.0.21:2379\"", ""), "missing field `address`"),
        ("rise 0", BASE.replace("name = \"b\"\n", "name = \"b\"\ncheck = { rise = 0 }\n"), "rise = 0: use 1 or more"),
        ("fall 0", BASE.replace("name = \"b\"\n", "name = \"b\"\ncheck = { fall = 0 }\n"), "fall = 0: use 1 or more"),
        (
            "timeout longer than inter",
            BASE.replace("name = \"b\"\n", "name = \"b\"\ncheck = { inter = \"1s\", timeout = \"5s\" }\n"),
            "is longer than inter",
        ),
        (
            "unreadable CA file",
            BASE.replace(
                "name = \"b\"\n",
                "name = \"b\"\ncheck = { type = \"https\", ca_file = \"/nonexistent/ca.pem\" }\n",
            ),
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "verify without a CA",
            BASE.replace("name = \"b\"\n", "name = \"b\"\ncheck = { type = \"https\" }\n"),
            "needs ca_file",
        ),
        (
            "certificate without key",
            BASE.replace("name = \"b\"\n", "name = \"b\"\ncheck = { crt = \"/etc/hostname\" }\n"),
            "crt and key go together",
        ),
        ("unknown backend", BASE.replace("backend = \"b\"", "backend = \"nope\""), "no [[backend]] named \"nope\""),
        ("weight too big", BASE.replace("2379\" }", "2379\", weight = 300 }"), "weight = 300"),
        ("bind inside NAT ports", BASE.replace("*:12379", "*:45000"), "inside global.nat_ports"),
        (
            "loopback bind without the connect hook",
            BASE.replace("*:12379", "127.0.0.1:12379").replace("[global]\n", "[global]\nlocal_clients = false\n"),
            "only processes on this host reach a loopback address, and xdplb serves them only with global.local_clients = true",
        ),
        (
            "loopback server behind a frontend remote clients use",
            BASE.replace("198.18.0.21:2379", "127.0.0.1:2379"),
            "backend[0] \"b\".server[0] \"s\".address: 127.0.0.1:2379 is a loopback address, which the flows of remote clients to frontend \"f\" cannot reach",
        ),
        (
            "bad duration",
            BASE.replace("name = \"b\"\n", "name = \"b\"\ncheck = { inter = \"2 parsecs\" }\n"),
            "unknown unit \" parsecs\"; use us, ms, s, m, h or d",
        ),
        ("bad port range", BASE.replace("[global]\n", "[global]\nnat_ports = \"5-4\"\n"), "is not a port range"),
        (
            "no frontend",
            "[[backend]]\nname = \"b\"\nserver = [ { name = \"s\", address = \"198.18.0.21:2379\" } ]\n".into(),
            "no [[frontend]]",
        ),
        (
            "verify none with a CA",
            check(&format!("type = \"https\", verify = \"none\", ca_file = \"{}\"", f.path("ca.pem"))),
            "backend[0] \"b\".check: verify = \"none\" with ca_file: certificates would not be checked",
        ),
        (
            "private key readable by others",
            check(&client("exposed-key.pem")),
            "is readable by group or others (mode 0644)",
        ),
        ("garbage key", check(&client("garbage.pem")), "backend[0] \"b\".check.key"),
        (
            "garbage certificate",
            check(&format!("crt = \"{}\", key = \"{}\"", f.path("junk.pem"), f.path("client-key.pem"))),
            "no PEM certificate in it",
        ),
        (
            "garbage CA",
            check(&format!("type = \"https\", ca_file = \"{}\"", f.path("junk.pem"))),
            "backend[0] \"b\".check.ca_file",
        ),
        ("zero fastinter", check("fastinter = \"0ms\""), "check.fastinter: use at least \"10ms\""),
        ("zero downinter", check("downinter = 0"), "check.downinter: use at least \"10ms\""),
        ("zero timeout", check("timeout = \"0s\""), "check.timeout: use at least \"10ms\""),
        ("duration that overflows u64", check("inter = \"300000000000000d\""), "is too long a duration"),
        ("duration past a year", check("inter = \"400d\""), "\"400d\" is too long a duration: write at most \"365d\""),
        (
            "CR LF in the check's path",
            check("type = \"http\", path = \"/health\\r\\nX-Evil: 1\""),
            "spaces and control characters (CR, LF)",
        ),
        ("CR LF in the check's host", check("type = \"http\", host = \"a\\r\\nX-Evil: 1\""), "check.host"),
        (
            "public status page without a password",
            BASE.replace("[global]\n", "[global]\nstats_bind = \"0.0.0.0:8404\"\n"),
            "is not a loopback address and global.stats_auth is not set",
        ),
        ("empty stats password", BASE.replace("[global]\n", "[global]\nstats_auth = \"admin:\"\n"), "user:password"),
    ];
    // The base itself is accepted: each refusal below is the doing of its one change.
    let base = tmp("base.toml", BASE);
    let (code, _, err) = xdplb(&["check-config", base.to_str().unwrap()]);
    assert_eq!(code, 0, "the base config is valid: {err}");
    let _ = std::fs::remove_dir_all(base.parent().unwrap());
    for (what, text, want) in cases {
        let file = tmp("bad.toml", text);
        let (code, _, err) = xdplb(&["check-config", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{what}: exit code; {err}");
        assert!(err.contains(file.to_str().unwrap()), "{what}: the message names the file: {err}");
        assert!(err.contains(want), "{what}: expected {want:?} in: {err}");
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }
}

#[test]
fn weak_but_allowed_settings_are_warned_about_and_secrets_never_printed() {
    let text = BASE
        .replace("[global]\n", "[global]\nstats_bind = \"0.0.0.0:8404\"\nstats_auth = \"admin:s3cret-pw\"\n")
        .replace("name = \"b\"\n", "name = \"b\"\ncheck = { type = \"https\", verify = \"none\" }\n");
    let file = tmp("weak.toml", &text);
    let (code, out, err) = xdplb(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: backend[0] \"b\".check: verify = \"none\""), "{err}");
    assert!(out.contains("stats_auth = \"admin:<hidden>\"") && !out.contains("s3cret-pw"), "{out}");
    // Without the password, the public page is refused; with the explicit opt-out, warned about.
    let open = tmp(
        "open.toml",
        &BASE.replace("[global]\n", "[global]\nstats_bind = \"0.0.0.0:8404\"\nstats_unauthenticated = true\n"),
    );
    let (code, _, err) = xdplb(&["check-config", open.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("without stats_auth (stats_unauthenticated = true)"), "{err}");
    for f in [file, open] {
        let _ = std::fs::remove_dir_all(f.parent().unwrap());
    }
}

#[test]
fn run_refuses_a_missing_interface_a_foreign_bind_address_and_missing_privileges() {
    let pins = "/sys/fs/bpf/xdplb-never";
    let file = tmp("ok.toml", BASE);
    let (code, _, err) = xdplb(&["run", "--config", file.to_str().unwrap(), "--iface", "nope0", "--pin-dir", pins]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("interface \"nope0\" does not exist"), "{err}");
    let foreign = tmp("foreign.toml", &BASE.replace("*:12379", "198.18.255.254:12379"));
    let (code, _, err) = xdplb(&["run", "--config", foreign.to_str().unwrap(), "--iface", "lo", "--pin-dir", pins]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("198.18.255.254 is not an address of this host") && err.contains("ip addr add"), "{err}");
    // Not root, no capabilities: the message names what is missing.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(integration::agent::xdplb_bin().unwrap())
        .args(["run", "--config", file.to_str().unwrap(), "--iface", "lo", "--pin-dir", pins])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN") && err.contains("sudo"), "{err}");
    assert!(!std::path::Path::new(pins).exists(), "nothing pinned");
    for f in [file, foreign] {
        let _ = std::fs::remove_dir_all(f.parent().unwrap());
    }
}

#[test]
fn the_agent_mounts_bpffs_when_it_is_not_mounted() {
    // In a private mount namespace, so that the host's bpffs is never touched.
    let lab = integration::lab::Lab::one_arm(1).unwrap();
    let file = tmp("ok.toml", BASE);
    let dir = file.parent().unwrap().to_path_buf();
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; umount /sys/fs/bpf 2>/dev/null; \
         ! mountpoint -q /sys/fs/bpf || exit 99; \
         exec {} run --config {} --iface eth0 --runtime-socket {}/s.sock --state-file {}/state.json",
        integration::agent::xdplb_bin().unwrap(),
        file.display(),
        dir.display(),
        dir.display()
    );
    let log = dir.join("agent.log");
    let mut child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "nsenter"])
        .arg(format!("--net=/run/netns/{}", lab.lb.name))
        .args(["--", "sh", "-c", &script])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ready:") || start.elapsed() > std::time::Duration::from_secs(20) {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the agent exited ({status}):\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("mounted bpffs at /sys/fs/bpf") && text.contains("ready:"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
