//! The state file (what was set by hand) after a crash or a power loss: truncated, empty or
//! garbage, the agent starts all the same, says so, and keeps the bad file aside for a look.

use std::{path::PathBuf, time::Duration};

use integration::{
    agent::Agent,
    lab::{self, Lab},
};

#[test]
fn a_truncated_or_garbage_state_file_is_set_aside_and_the_agent_starts() {
    let lab = Lab::one_arm(3).unwrap();
    lab.start_servers(env!("CARGO_BIN_EXE_lbtest-server"), 2379).unwrap();
    let cfg = lab::config(&lab, 12379, 2379, "", &[]);
    let truncated = "{\n  \"servers\": {\n    \"pool/app1\": {\n      \"state\": \"ma";
    for (what, content) in [("truncated", truncated), ("empty", ""), ("garbage", "\u{0}\u{7f}\u{1b}[2Jnot json at all")]
    {
        let id = integration::netns::unique("xdplb-state-");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&id);
        // Where integration::agent keeps an agent's state file.
        let state_dir =
            std::env::temp_dir().join(format!("xdplb-state{}", pin_dir.display().to_string().replace('/', "_")));
        std::fs::create_dir_all(&state_dir).unwrap();
        let state = state_dir.join("server-state.json");
        std::fs::write(&state, content).unwrap();
        let mut agent =
            Agent::start_in(&lab.lb, &cfg, &lab.lb_ifaces, "native", &std::env::temp_dir().join(&id), &pin_dir)
                .unwrap_or_else(|e| panic!("{what}: the agent did not start: {e:#}"));
        agent.wait_log("global.state_file:", 1, Duration::from_secs(1)).unwrap();
        let log = agent.log_text();
        let line = log.lines().find(|l| l.contains("global.state_file:")).unwrap();
        assert!(line.contains("WARN") && line.contains("kept aside as"), "{what}: {line}");
        let aside: Vec<PathBuf> = std::fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("server-state.json.bad-"))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), content, "{what}: kept as it was");
        // And it works: a state set by hand is written anew, whole.
        let out = std::process::Command::new(integration::agent::xdplb_bin().unwrap())
            .args(["server", "drain", "pool/app2", "--socket"])
            .arg(agent.socket())
            .output()
            .unwrap();
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stdout));
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        assert_eq!(saved["servers"]["pool/app2"]["state"], "drain", "{what}: {saved}");
        drop(agent);
    }
}
