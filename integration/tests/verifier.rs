//! The kernel's verifier: how much of its limit each program takes (the walk is most of an
//! agent's start-up, and a program past the limit is refused), and that a data path without IPv6
//! servers loads no IPv6 stage, also over a pinned one whose previous agent had them, unless
//! that agent's IPv6 flows are still in the table.

use std::path::{Path, PathBuf};

use integration::netns::{sh, unique};
use lb_common::{FlowKeyOf, FlowOf, V6};
use lb_user::dataplane::{self, LoadOptions, VERIFIER_LIMIT};

/// Half the limit stays free in every program: room for the next feature and for kernels whose
/// verifier prunes less, and a state explosion (the main program was at 66% before
/// `options::find` stopped handing the verifier constant offsets) fails here first.
const HEADROOM: u32 = VERIFIER_LIMIT / 2;

/// Removes the test's pins however it ends.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = dataplane::remove_pins(&self.0);
    }
}

fn load(pin_dir: &Path, ipv6: bool) -> aya::Ebpf {
    dataplane::load(&LoadOptions { pin_dir: Some(pin_dir.to_path_buf()), max_flows: 1024, max_half_open: 1024, ipv6 })
        .unwrap()
}

/// The filled slots of the pinned `family_progs` (the tail-called IPv6 programs).
fn family_slots(pin_dir: &Path) -> usize {
    let out = sh(std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin_dir.join(lb_common::names::FAMILY_PROGS)))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array().map_or(0, Vec::len)
}

#[test]
fn every_program_leaves_half_the_verifiers_limit_and_ipv6_stages_load_only_for_ipv6_servers() {
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(unique("xdplb-test-")));
    let with = load(&pins.0, true);
    let walked = dataplane::verified(&with);
    let total = |w: &[(String, u32)]| w.iter().map(|(_, n)| u64::from(*n)).sum::<u64>();
    for (name, n) in &walked {
        eprintln!("{name:24} {n:>9} instructions walked");
    }
    assert!(!walked.is_empty(), "this kernel (>= 5.16) says what its verifier walked");
    for (name, n) in &walked {
        assert!(*n <= VERIFIER_LIMIT - HEADROOM, "{name}: the verifier walked {n} of its limit of {VERIFIER_LIMIT}");
    }
    for (name, _) in lb_common::FAMILY_PROGRAMS {
        assert!(walked.iter().any(|(n, _)| n == name), "{name} is loaded for IPv6 servers");
    }
    assert_eq!(family_slots(&pins.0), lb_common::FAMILY_PROGRAMS.len(), "every IPv6 stage in its slot");
    // The agent exits with the pins left (a restart): its programs stay in the pinned slots.
    drop(with);
    assert_eq!(family_slots(&pins.0), lb_common::FAMILY_PROGRAMS.len(), "the pinned slots outlive the agent");

    // The next agent has no IPv6 server: no IPv6 stage loaded, the old ones out of their slots.
    let without = load(&pins.0, false);
    let walked_without = dataplane::verified(&without);
    for (name, _) in lb_common::FAMILY_PROGRAMS {
        assert!(!walked_without.iter().any(|(n, _)| n == name), "{name} is not loaded without IPv6 servers");
    }
    assert_eq!(family_slots(&pins.0), 0, "the previous agent's IPv6 stages are out of family_progs");
    eprintln!(
        "verifier: {} instructions walked with the IPv6 stages, {} without",
        total(&walked),
        total(&walked_without)
    );
    assert!(total(&walked_without) < total(&walked));
    assert!(!dataplane::ipv6_stages_loaded(&without));
    drop(without);

    // Unless the adopted IPv6 table holds a previous agent's flows: their stages stay for them.
    let data = aya::maps::MapData::from_pin(pins.0.join(lb_common::names::FLOWS6)).unwrap();
    let mut flows6: aya::maps::HashMap<_, FlowKeyOf<V6>, FlowOf<V6>> =
        aya::maps::Map::from_map_data(data).unwrap().try_into().unwrap();
    let key = FlowKeyOf {
        src_addr: [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        dst_port_be: 12379u16.to_be(),
        ..FlowKeyOf::default()
    };
    flows6.insert(key, FlowOf::<V6>::default(), 0).unwrap();
    let kept = load(&pins.0, false);
    assert!(dataplane::ipv6_stages_loaded(&kept), "the stages of the adopted IPv6 flows");
    assert_eq!(family_slots(&pins.0), lb_common::FAMILY_PROGRAMS.len());
}
