//! Test harness for xdplb: network namespaces that clean up after themselves, lab topologies
//! on real veth links, an agent process guard, frame builders, packet fixtures as tables, and
//! traffic helpers.

pub mod agent;
pub mod cgroup;
pub mod churn;
pub mod fixture;
pub mod frames;
pub mod ha;
pub mod hostile;
pub mod lab;
pub mod netns;
pub mod pki;
pub mod seed;
pub mod table;
pub mod traffic;
pub mod xdp_pass;
