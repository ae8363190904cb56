//! Builds the XDP program (`lb-ebpf`) for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker, and leaves it in OUT_DIR for `include_bytes_aligned!`. `cargo xtask setup`
//! installs what this needs; `AYA_BUILD_SKIP=1` skips it for host-only checks (the binary then
//! refuses to load a data path).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a build script on the developer's machine: failing the build is what it should do"
)]
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-changed=../lb-ebpf/src");
    println!("cargo:rerun-if-changed=../lb-ebpf/Cargo.toml");
    println!("cargo:rerun-if-changed=../lb-common/src");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let object = out_dir.join("lb-ebpf");
    if matches!(env::var("AYA_BUILD_SKIP").as_deref(), Ok("1" | "true")) {
        println!("cargo:warning=AYA_BUILD_SKIP=1: building xdplb without its XDP program");
        replace(&object, |tmp| std::fs::write(tmp, b""));
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    // bpf-linker lives where `cargo xtask setup` put it.
    let tools = workspace.join("target/tools/bin");
    let path = format!("{}:{}", tools.display(), env::var("PATH").unwrap_or_default());
    let target_dir = out_dir.join("ebpf-target");
    // Flags for the eBPF crate only: BTF for bpftool and the loader, and BPF ISA v3 for
    // atomic fetch-add (the shared round-robin cursor).
    let rustflags = ["-Cdebuginfo=2", "-Clink-arg=--btf", "-Ctarget-cpu=v3"].join("\x1f");
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--package", "lb-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&workspace)
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .expect("cannot run `rustup run nightly cargo`: run `cargo xtask setup` first");
    assert!(
        status.success(),
        "building the XDP program (lb-ebpf) failed. If bpf-linker or the nightly's rust-src is \
         missing, run `cargo xtask setup`; it installs both."
    );
    let built = target_dir.join("bpfel-unknown-none/release/lb-ebpf");
    replace(&object, |tmp| std::fs::copy(&built, tmp).map(|_| ()));
}

/// Writes `path` through a temporary file renamed over it: a new file, never the old one
/// rewritten in place (a target directory copied with hard links shares the old one).
fn replace(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) {
    let tmp = path.with_extension("tmp");
    write(&tmp).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), path.display()));
}
