//! Local clients: processes on the balancer host connect() to a frontend, and their packets
//! never cross XDP (they leave from the host's own stack, or go over loopback). A cgroup v2
//! `connect4` hook balances them at connect() time instead, with the same backend sets, the
//! same round-robin cursors and the same suspicion as XDP (`balance::pick`): the socket is
//! simply connected to the server, so there is no NAT and no per-packet cost. `getpeername4`
//! gives the application back the frontend address it dialled (from `local_peers`, keyed by
//! socket cookie), as Cilium's socket load balancing does.
//!
//! A hook on a cgroup sees the sockets of every network namespace its processes live in: it
//! acts only in the agent's own (`Settings::netns_cookie`).
//!
//! IPv6 sockets take `connect6` and `getpeername6`: an IPv6 frontend to one of its IPv6
//! servers, and an IPv4-mapped address (`::ffff:198.18.0.10`, a dual-stack socket dialling an
//! IPv4 frontend) to one of its IPv4 servers, mapped too (`local_peers6` remembers both).

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use lb_common::{Event, LocalPeer, LocalPeer6, V4, V6};

use crate::{balance, maps, stats};

/// The connect goes on (with whatever address the hook left in it).
const PROCEED: i32 = 1;
/// The connect fails, with the error `bpf_set_retval` gave (EPERM without one).
const REJECT: i32 = 0;
const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn xdplb_connect4(ctx: SockAddrContext) -> i32 {
    connect4(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn xdplb_getpeername4(ctx: SockAddrContext) -> i32 {
    getpeername4(&ctx);
    // getpeername hooks may only return 1.
    PROCEED
}

/// A TCP socket of the agent's own network namespace, with local clients served (a hook on a
/// cgroup sees every namespace's sockets).
#[inline(always)]
fn ours(sa: *mut aya_ebpf::bindings::bpf_sock_addr) -> bool {
    let (ty, proto) = unsafe { ((*sa).type_, (*sa).protocol) };
    if ty != SOCK_STREAM || proto != IPPROTO_TCP {
        return false;
    }
    let Some(settings) = maps::settings() else { return false };
    let ours = settings.netns_cookie;
    ours != 0 && unsafe { bpf_get_netns_cookie(sa as *mut c_void) } == ours
}

#[inline(always)]
fn connect4(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    if !ours(sa) {
        return PROCEED;
    }
    // user_ip4 holds the address in wire order, user_port the port in wire order in its low
    // 16 bits: the frontend key's own layout.
    let addr = unsafe { (*sa).user_ip4 }.to_ne_bytes();
    let port_be = unsafe { (*sa).user_port } as u16;
    let Some(frontend) = maps::frontend(addr, port_be) else { return PROCEED };
    let now = unsafe { bpf_ktime_get_ns() };
    // The client's address for `balance source`: every local client is this host.
    let Some((server_id, server)) = balance::pick(frontend.pool_id, 0, now, &addr) else {
        stats::event(Event::LocalRefused);
        // HAProxy's listener with no server left closes at once; a refused connect is the
        // local equivalent (the default for a rejecting hook would be EPERM).
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return REJECT;
    };
    let peer = LocalPeer {
        frontend_addr: addr,
        server_addr: server.addr,
        frontend_port_be: port_be,
        server_port_be: server.port_be,
    };
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    // Without the entry only getpeername() is wrong (it names the server): connect anyway.
    let _ = maps::LOCAL_PEERS.insert(&cookie, &peer, 0);
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(server.addr);
        (*sa).user_port = server.port_be as u32;
    }
    stats::local_connection(frontend.frontend_id, server_id);
    PROCEED
}

#[cgroup_sock_addr(connect6)]
pub fn xdplb_connect6(ctx: SockAddrContext) -> i32 {
    connect6(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn xdplb_getpeername6(ctx: SockAddrContext) -> i32 {
    getpeername6(&ctx);
    PROCEED
}

/// `::ffff:0:0/96`, the IPv4-mapped prefix, as the first three words of `user_ip6` (wire order).
const MAPPED: [u32; 3] = [0, 0, u32::from_be(0xffff)];

/// The socket address's IPv6 address, one 32-bit word at a time (the only width the verifier
/// lets a `bpf_sock_addr` program use on `user_ip6`).
#[inline(always)]
fn read_ip6(sa: *mut aya_ebpf::bindings::bpf_sock_addr) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, word) in w.iter_mut().enumerate() {
        *word = unsafe { core::ptr::read_volatile(&raw const (*sa).user_ip6[i]) };
    }
    w
}

#[inline(always)]
fn write_ip6(sa: *mut aya_ebpf::bindings::bpf_sock_addr, w: [u32; 4]) {
    for (i, word) in w.iter().enumerate() {
        unsafe { core::ptr::write_volatile(&raw mut (*sa).user_ip6[i], *word) };
    }
}

#[inline(always)]
fn words(a: V6) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

#[inline(always)]
fn bytes(w: [u32; 4]) -> V6 {
    let mut a = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        a[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    a
}

#[inline(always)]
fn connect6(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    if !ours(sa) {
        return PROCEED;
    }
    let dialled = read_ip6(sa);
    let port_be = unsafe { (*sa).user_port } as u16;
    // An IPv4-mapped address: the IPv4 frontend, an IPv4 server, mapped back.
    let (frontend, mapped) = if dialled[..3] == MAPPED {
        (maps::frontend::<V4>(dialled[3].to_ne_bytes(), port_be), true)
    } else {
        (maps::frontend::<V6>(bytes(dialled), port_be), false)
    };
    let Some(frontend) = frontend else { return PROCEED };
    let now = unsafe { bpf_ktime_get_ns() };
    let picked = if mapped {
        balance::pick::<V4>(frontend.pool_id, 0, now, &dialled[3].to_ne_bytes())
            .map(|(id, s)| (id, [MAPPED[0], MAPPED[1], MAPPED[2], u32::from_ne_bytes(s.addr)], s.port_be))
    } else {
        balance::pick::<V6>(frontend.pool_id, 0, now, &bytes(dialled)).map(|(id, s)| (id, words(s.addr), s.port_be))
    };
    let Some((server_id, server, server_port_be)) = picked else {
        stats::event(Event::LocalRefused);
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return REJECT;
    };
    let peer = LocalPeer6 {
        frontend_addr: bytes(dialled),
        server_addr: bytes(server),
        frontend_port_be: port_be,
        server_port_be,
    };
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    let _ = maps::LOCAL_PEERS6.insert(&cookie, &peer, 0);
    write_ip6(sa, server);
    unsafe { (*sa).user_port = server_port_be as u32 };
    stats::local_connection(frontend.frontend_id, server_id);
    PROCEED
}

#[inline(always)]
fn getpeername6(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    let Some(peer) = (unsafe { maps::LOCAL_PEERS6.get(&cookie) }) else { return };
    let (addr, port_be) = (bytes(read_ip6(sa)), unsafe { (*sa).user_port } as u16);
    if addr == peer.server_addr && port_be == peer.server_port_be {
        write_ip6(sa, words(peer.frontend_addr));
        unsafe { (*sa).user_port = peer.frontend_port_be as u32 };
    }
}

#[inline(always)]
fn getpeername4(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    let Some(peer) = (unsafe { maps::LOCAL_PEERS.get(&cookie) }) else { return };
    let (addr, port_be) = unsafe { ((*sa).user_ip4.to_ne_bytes(), (*sa).user_port as u16) };
    // Only the connection the hook made (a socket reused for another connect() is not).
    if addr == peer.server_addr && port_be == peer.server_port_be {
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(peer.frontend_addr);
            (*sa).user_port = peer.frontend_port_be as u32;
        }
    }
}
