//! Per-frontend source allowlists (`allow` in the configuration): a SYN to a frontend that has
//! one is let through only from a listed network (`allow`, `allow6` per family). Frontends
//! without a list skip the lookup.

use lb_common::{FlowKeyOf, Frontend};

use crate::family::Family;

/// Whether `key`'s source may open a flow to `frontend`.
#[inline(always)]
pub fn admits<A: Family>(frontend: &Frontend, key: &FlowKeyOf<A>) -> bool {
    A::admits(frontend, key.src_addr)
}
