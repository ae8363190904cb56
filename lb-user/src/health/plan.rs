//! What each checked server's checks are: the request, the TLS settings and the timing,
//! resolved once from the topology and compared on reload.

use std::{collections::HashMap, net::IpAddr};

use rustls::pki_types::ServerName;

use super::{check::CheckSpec, tls};
use crate::{
    config::{CheckCfg, CheckKind, Config},
    model::Topology,
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
pub fn plans(cfg: &Config, topo: &Topology) -> Result<HashMap<u32, Plan>, Vec<String>> {
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for b in &cfg.backends {
        if b.check.kind == CheckKind::None {
            continue;
        }
        let Some(pool) = topo.pool(&b.name) else { continue };
        let tls = if b.check.kind == CheckKind::Https
            || (b.check.kind == CheckKind::Tcp && (b.check.crt.is_some() || b.check.ca_file.is_some()))
        {
            match tls::client_config(&b.check) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("backend {:?} check: {e}", b.name));
                    continue;
                }
            }
        } else {
            None
        };
        for (s_cfg, s) in b.servers.iter().zip(&pool.servers) {
            if !s_cfg.check {
                continue;
            }
            let name = match &b.check.sni {
                Some(sni) => match ServerName::try_from(sni.clone()) {
                    Ok(n) => n,
                    Err(e) => {
                        problems.push(format!("backend {:?} check.sni {sni:?}: {e}", b.name));
                        continue;
                    }
                },
                None => ServerName::IpAddress(IpAddr::V4(*s.addr.ip()).into()),
            };
            let addr = std::net::SocketAddrV4::new(*s.addr.ip(), b.check.port.unwrap_or(s.addr.port()));
            let spec = CheckSpec {
                kind: b.check.kind,
                addr,
                timeout: b.check.timeout(),
                path: b.check.path.clone(),
                host: b.check.host.clone().unwrap_or_else(|| addr.to_string()),
                expect_status: b.check.expect_status,
                expect_string: b.check.expect_string.clone(),
                tls: tls.clone().map(|c| (c, name)),
            };
            let key = format!("{}|{:?}|{}", s.addr, b.check, s_cfg.check);
            out.insert(s.id, Plan { pool: b.name.clone(), server: s.name.clone(), spec, check: b.check.clone(), key });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
