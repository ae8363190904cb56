// Rebuild the object when the shared types change (lb-user's build script drives this build).
fn main() {
    println!("cargo:rerun-if-changed=../lb-common/src");
}
