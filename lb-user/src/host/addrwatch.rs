//! The kernel's IPv4 and IPv6 addresses as they come and go (netlink, `RTM_NEWADDR`/`RTM_DELADDR`): a
//! keepalived VIP arriving on the new master, an address added to an attached interface. The
//! watcher only says that something changed and what; the agent re-reads the addresses and
//! re-keys its frontends (see `Topology::rebind`), so a lost or merged message costs nothing.

use std::net::IpAddr;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{address::AddressAttribute, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use tokio::sync::mpsc;

/// `RTNLGRP_IPV4_IFADDR` (linux/rtnetlink.h): IPv4 address changes.
const RTNLGRP_IPV4_IFADDR: u32 = 5;
/// `RTNLGRP_IPV6_IFADDR`: IPv6 address changes (also the end of an address's DAD).
const RTNLGRP_IPV6_IFADDR: u32 = 9;

/// One address change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrChange {
    pub added: bool,
    pub addr: Option<IpAddr>,
    pub ifindex: u32,
}

/// Subscribes to the kernel's address changes (both families) and sends them to `tx` until it closes.
/// Subscribing happens before this returns, so nothing that happens afterwards is missed.
pub fn spawn(tx: mpsc::Sender<AddrChange>) -> std::io::Result<()> {
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    socket.socket_mut().bind(&SocketAddr::new(0, 0))?;
    socket.socket_mut().add_membership(RTNLGRP_IPV4_IFADDR)?;
    // A host without IPv6 has no such group to join; its IPv4 changes are still watched.
    if let Err(e) = socket.socket_mut().add_membership(RTNLGRP_IPV6_IFADDR) {
        log::debug!("address watch: IPv6 address changes not watched: {e}");
    }
    tokio::spawn(async move {
        loop {
            let buf = match socket.recv_from_full().await {
                Ok((buf, _)) => buf,
                Err(e) => {
                    // ENOBUFS: changes were lost; the agent re-reads everything anyway.
                    log::warn!("address watch: {e}; re-reading the host's addresses");
                    if tx.send(AddrChange { added: true, addr: None, ifindex: 0 }).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            for change in parse(&buf) {
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

/// The address changes in one netlink datagram (it may carry several messages).
pub fn parse(mut buf: &[u8]) -> Vec<AddrChange> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) else { break };
        let len = usize::try_from(msg.header.length).unwrap_or(0);
        let change = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => Some((true, a)),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => Some((false, a)),
            _ => None,
        };
        if let Some((added, a)) = change {
            let addr = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            out.push(AddrChange { added, addr, ifindex: a.header.index });
        }
        // Messages are 4-byte aligned within the datagram.
        let next = (len + 3) & !3;
        if next == 0 {
            break;
        }
        buf = buf.get(next..).unwrap_or_default();
    }
    out
}
