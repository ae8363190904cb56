//! A cgroup v2 of the test's own, so that the connect hook a test's agent attaches sees only the
//! test's own client processes; removed on drop (its processes are killed first).

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context, Result};

use crate::netns::unique;

pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> Result<Self> {
        let root = lb_user::dataplane::hook::cgroup2_root()?;
        let path = root.join(unique("xdplb-test-"));
        fs::create_dir(&path).with_context(|| format!("creating the cgroup {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // cgroup.kill (Linux 5.14+) ends whatever is left in it; rmdir needs it empty.
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("cannot remove the test cgroup {}", self.path.display());
    }
}
