//! Per-frontend source allowlists (`allow` in the configuration): a SYN to a frontend that has
//! one is let through only from a listed network. Frontends without a list skip the lookup.

use aya_ebpf::btf_maps::lpm_trie::Key;
use lb_common::{AllowKey, FlowKey, Frontend, FRONTEND_F_ALLOWLIST};

use crate::maps::ALLOW;

/// Whether `key`'s source may open a flow to `frontend`.
#[inline(always)]
pub fn admits(frontend: &Frontend, key: &FlowKey) -> bool {
    if frontend.flags & FRONTEND_F_ALLOWLIST == 0 {
        return true;
    }
    let lookup = Key::new(
        AllowKey::prefix_len(32),
        AllowKey { frontend_id_be: frontend.frontend_id.to_be(), addr: key.src_addr },
    );
    ALLOW.get(&lookup).is_some()
}
