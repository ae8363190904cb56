//! What each checked server's checks are: the request, the TLS settings and the timing,
//! resolved once from the topology and compared on reload.

use std::{collections::HashMap, net::SocketAddr};

use rustls::pki_types::ServerName;

use super::{check::CheckSpec, tls};
use crate::{
    config::{CheckCfg, CheckKind},
    model::Topology,
    problems::Problems,
};

/// What one server's checks are: the spec and the timing, compared on reload.
#[derive(Clone)]
pub struct Plan {
    pub pool: String,
    pub server: String,
    pub spec: CheckSpec,
    pub check: CheckCfg,
    /// A fingerprint of everything that changes how checks run.
    pub(super) key: String,
}

/// Builds the check plan of every checked server; problems (a certificate that does not parse,
/// a bad SNI) are reported all at once, before anything touches the kernel.
pub fn plans(topo: &Topology) -> Result<HashMap<u32, Plan>, Problems> {
    let mut out = HashMap::new();
    let mut problems = Problems::default();
    for pool in &topo.pools {
        let check = &pool.check;
        if check.kind == CheckKind::None {
            continue;
        }
        let tls = if check.kind.is_tls()
            || (check.kind == CheckKind::Tcp && (check.crt.is_some() || check.ca_file.is_some()))
        {
            match tls::client_config(check) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("backend {:?} check: {e}", pool.name));
                    continue;
                }
            }
        } else {
            None
        };
        for s in pool.servers.iter().filter(|s| s.check) {
            let name = match &check.sni {
                Some(sni) => match ServerName::try_from(sni.clone()) {
                    Ok(n) => n,
                    Err(e) => {
                        problems.push(format!("backend {:?} check.sni {sni:?}: {e}", pool.name));
                        continue;
                    }
                },
                None => ServerName::IpAddress(s.addr.ip().into()),
            };
            // Either family; `Host:` below is `[2001:db8::1]:2379` for IPv6 (SocketAddr's form).
            let addr = SocketAddr::new(s.addr.ip(), check.port.unwrap_or(s.addr.port()));
            let spec = CheckSpec {
                kind: check.kind,
                addr,
                timeout: check.timeout(),
                path: check.path.clone(),
                host: check.host.clone().unwrap_or_else(|| addr.to_string()),
                expect_status: check.expect_status,
                expect_string: check.expect_string.clone(),
                tls: tls.clone().map(|c| (c, name)),
            };
            let key = format!("{}|{:?}|{}", s.addr, check, s.check);
            out.insert(s.id, Plan { pool: pool.name.clone(), server: s.name.clone(), spec, check: check.clone(), key });
        }
    }
    problems.into_result(out)
}
