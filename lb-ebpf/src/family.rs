//! The two address families, one data path. Every stage (`conntrack`, `ports`, `balance`, `nat`,
//! `forward`, `reset`, `redispatch`, ...) is generic over the address as it is in a packet
//! (lb-common's `V4`, `V6`); this trait says what differs between the families: the IP header,
//! the maps that hold addresses (`flows` or `flows6`, ...), the checksum work of a rewrite and
//! what the FIB is asked. Each family is compiled into a program of its own (`xdplb`, and
//! `xdplb6` that it tail-calls for IPv6 frames), so each gets the whole BPF stack.

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibParams,
    btf_maps::{lpm_trie::Key, Array, LruHashMap, PerCpuArray},
    helpers::{bpf_csum_diff, bpf_ktime_get_ns},
};
use lb_common::{
    checksum, AllowKey, AllowKey6, FlowKeyOf, FlowOf, Frontend, FrontendKeyOf, NextHopOf, RstBucket, ServerOf,
    DEFAULT_FLOW_ENTRIES, DEFAULT_SYN_FLOW_ENTRIES, FRONTEND_F_ALLOWLIST, MAX_SERVERS, RST_BURST, V4, V6,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{maps::*, parse::ETH_LEN};

pub type Flows<A> = LruHashMap<FlowKeyOf<A>, FlowOf<A>, { DEFAULT_FLOW_ENTRIES as usize }>;
pub type SynFlows<A> = LruHashMap<FlowKeyOf<A>, FlowOf<A>, { DEFAULT_SYN_FLOW_ENTRIES as usize }>;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

pub trait Family: Copy + PartialEq + Default + 'static {
    /// The IP header without options or extension headers.
    type Ip;
    const IP_LEN: usize;
    const TCP_OFF: usize = ETH_LEN + Self::IP_LEN;
    const ETHERTYPE: u16;

    fn flows() -> &'static Flows<Self>;
    fn syn_flows() -> &'static SynFlows<Self>;
    fn servers() -> &'static Array<ServerOf<Self>, { MAX_SERVERS as usize }>;
    fn next_hops() -> &'static Array<NextHopOf<Self>, { MAX_SERVERS as usize }>;
    /// Room to build a new flow's two entries in (too big for the stack beside the rest).
    fn scratch() -> &'static PerCpuArray<FlowOf<Self>, 2>;
    fn frontend(key: &FrontendKeyOf<Self>) -> Option<&'static Frontend>;

    /// 127/8 or ::1: a frame from a wire addressed there is never ours.
    fn is_loopback(&self) -> bool;
    /// `*dst = *src` for an address read at a variable offset (a server's source address):
    /// written out word by word, where the compiler would call a byte-copy loop the verifier
    /// walks byte by byte.
    fn copy(dst: &mut Self, src: &Self);
    /// The address folded into 32 bits, native order (hash input): an IPv4 address as one
    /// word, an IPv6 address's four words XORed.
    fn fold32(&self) -> u32;
    /// The checksum `check` (over this address) after the address changes from `old` to `new`.
    /// Addresses go by reference: an IPv6 address copied is 16 bytes of a 512-byte stack.
    fn replace(check: u16, old: &Self, new: &Self) -> u16;

    /// The header's source and destination, in place.
    fn addrs(ip: *const Self::Ip) -> (*mut Self, *mut Self);
    /// Writes the header's addresses, `new` (source, destination), fixing IPv4's header
    /// checksum; returns the TCP checksum `tcp_check` (as read, big-endian value) updated for
    /// them (its pseudo-header covers them).
    fn translate(ip: *mut Self::Ip, tcp_check: u16, new: &[Self; 2]) -> u16;
    /// The packet may be fragmented on its way (IPv4 without DF; never IPv6's, whose routers
    /// do not fragment).
    fn may_fragment(ip: *const Self::Ip) -> bool;
    /// Fills the FIB lookup's family-specific parameters for a packet with header `ip` and of
    /// `ip_len` bytes, rewritten to `src` -> `dst`.
    fn fib(fib: &mut FibParams, ip: *const Self::Ip, ip_len: u32, src: &Self, dst: &Self);
    /// Writes a whole IP header without options for a TCP segment of `tcp_len` bytes, `ttl` hops.
    fn write_header(ip: *mut Self::Ip, src: Self, dst: Self, tcp_len: usize);
    /// The TCP checksum of `segment` (header and payload, in the frame) under the header `ip`'s
    /// addresses, as a big-endian value.
    fn tcp_checksum(ip: *const Self::Ip, segment: &[u8]) -> u16;

    /// Whether `src` may be answered with one more RST (see `reset`).
    fn rst_allowed(src: &Self) -> bool;
    /// Whether `src` may open a flow to `frontend` (its `allow` list).
    fn admits(frontend: &Frontend, src: Self) -> bool;
    /// Flow events (`flow_events`) are sent for this family.
    const FLOW_EVENTS: bool;
    /// Stages run in programs of their own (tail calls, see `v6` and `main`'s `stage`) and the
    /// NAT port walk in a frame of its own (`ports`): IPv6's bigger keys and addresses leave no
    /// room for them in one chain of frames.
    const OUTLINE: bool;
    /// A new flow refused or left unanswered by its server moves to the next one (`redispatch`).
    /// Not for IPv6 yet: its stages' frames leave no room for the move on the BPF stack.
    const REDISPATCH: bool;
}

/// A source's RST allowance in `map` (see `reset`): a source seen for the first time starts
/// with a full burst; when the map cannot remember it, it is answered (the map is an LRU).
#[inline(always)]
fn take_rst<A>(map: &LruHashMap<A, RstBucket, { lb_common::RST_LIMIT_SOURCES as usize }>, src: &A) -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    match map.get_ptr_mut(src) {
        Some(b) => unsafe { (*b).take(now) },
        None => {
            let fresh = RstBucket { refilled_ns: now, tokens: RST_BURST - 1, _pad: 0 };
            let _ = map.insert(src, &fresh, aya_ebpf::bindings::BPF_NOEXIST as u64);
            true
        }
    }
}

impl Family for V4 {
    type Ip = Ipv4Hdr;
    const IP_LEN: usize = Ipv4Hdr::LEN;
    const ETHERTYPE: u16 = 0x0800;
    const FLOW_EVENTS: bool = true;
    const OUTLINE: bool = false;
    const REDISPATCH: bool = true;

    #[inline(always)]
    fn flows() -> &'static Flows<Self> {
        &FLOWS
    }
    #[inline(always)]
    fn syn_flows() -> &'static SynFlows<Self> {
        &SYN_FLOWS
    }
    #[inline(always)]
    fn servers() -> &'static Array<ServerOf<Self>, { MAX_SERVERS as usize }> {
        &SERVERS
    }
    #[inline(always)]
    fn next_hops() -> &'static Array<NextHopOf<Self>, { MAX_SERVERS as usize }> {
        &NEXT_HOPS
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<FlowOf<Self>, 2> {
        &SCRATCH
    }
    #[inline(always)]
    fn frontend(key: &FrontendKeyOf<Self>) -> Option<&'static Frontend> {
        // SAFETY: the agent replaces values whole; a reader sees either the old or the new one.
        unsafe { FRONTENDS.get(key) }
    }
    #[inline(always)]
    fn copy(dst: &mut Self, src: &Self) {
        *dst = *src;
    }
    #[inline(always)]
    fn is_loopback(&self) -> bool {
        self[0] == 127
    }
    #[inline(always)]
    fn fold32(&self) -> u32 {
        u32::from_ne_bytes(*self)
    }
    #[inline(always)]
    fn replace(check: u16, old: &Self, new: &Self) -> u16 {
        checksum::replace32(check, *old, *new)
    }
    #[inline(always)]
    fn addrs(ip: *const Ipv4Hdr) -> (*mut Self, *mut Self) {
        let ip = ip as *mut Ipv4Hdr;
        unsafe { (&raw mut (*ip).src_addr, &raw mut (*ip).dst_addr) }
    }
    #[inline(always)]
    fn translate(ip: *mut Ipv4Hdr, tcp_check: u16, new: &[Self; 2]) -> u16 {
        let ip = unsafe { &mut *ip };
        let [src, dst] = *new;
        let tcp_check = checksum::replace32(tcp_check, ip.src_addr, src);
        let tcp_check = checksum::replace32(tcp_check, ip.dst_addr, dst);
        let c = u16::from_be_bytes(ip.check);
        let c = checksum::replace32(c, ip.src_addr, src);
        let c = checksum::replace32(c, ip.dst_addr, dst);
        ip.src_addr = src;
        ip.dst_addr = dst;
        ip.check = c.to_be_bytes();
        tcp_check
    }
    #[inline(always)]
    fn may_fragment(ip: *const Ipv4Hdr) -> bool {
        u16::from_be_bytes(unsafe { (*ip).frags }) & 0x4000 == 0
    }
    #[inline(always)]
    fn fib(fib: &mut FibParams, ip: *const Ipv4Hdr, ip_len: u32, src: &Self, dst: &Self) {
        fib.family = AF_INET;
        fib.__bindgen_anon_1.tot_len = ip_len as u16;
        fib.__bindgen_anon_2.tos = unsafe { (*ip).tos };
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(*src);
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(*dst);
    }
    #[inline(always)]
    fn write_header(ip: *mut Ipv4Hdr, src: Self, dst: Self, tcp_len: usize) {
        let ip = unsafe { &mut *ip };
        ip.vihl = 0x45;
        ip.tos = 0;
        ip.tot_len = ((Ipv4Hdr::LEN + tcp_len) as u16).to_be_bytes();
        ip.id = [0, 0];
        ip.frags = [0x40, 0]; // DF
        ip.ttl = 64;
        ip.proto = IPPROTO_TCP;
        ip.check = [0, 0];
        ip.src_addr = src;
        ip.dst_addr = dst;
        let bytes = unsafe { &*(ip as *const Ipv4Hdr as *const [u8; Ipv4Hdr::LEN]) };
        ip.check = checksum::ipv4_header(bytes).to_be_bytes();
    }
    #[inline(always)]
    fn tcp_checksum(ip: *const Ipv4Hdr, segment: &[u8]) -> u16 {
        let (src, dst) = Self::addrs(ip);
        checksum::tcp_ipv4(unsafe { *src }, unsafe { *dst }, segment)
    }
    #[inline(always)]
    fn rst_allowed(src: &Self) -> bool {
        take_rst(&RST_LIMIT, src)
    }
    #[inline(always)]
    fn admits(frontend: &Frontend, src: Self) -> bool {
        if frontend.flags & FRONTEND_F_ALLOWLIST == 0 {
            return true;
        }
        let key = AllowKey { frontend_id_be: frontend.frontend_id.to_be(), addr: src };
        ALLOW.get(&Key::new(AllowKey::prefix_len(32), key)).is_some()
    }
}

impl Family for V6 {
    type Ip = Ipv6Hdr;
    const IP_LEN: usize = Ipv6Hdr::LEN;
    const ETHERTYPE: u16 = 0x86dd;
    /// Not yet: the agent's readers (tcplog, flow sync) know IPv4 records only.
    const FLOW_EVENTS: bool = false;
    const OUTLINE: bool = true;
    const REDISPATCH: bool = false;

    #[inline(always)]
    fn flows() -> &'static Flows<Self> {
        &FLOWS6
    }
    #[inline(always)]
    fn syn_flows() -> &'static SynFlows<Self> {
        &SYN_FLOWS6
    }
    #[inline(always)]
    fn servers() -> &'static Array<ServerOf<Self>, { MAX_SERVERS as usize }> {
        &SERVERS6
    }
    #[inline(always)]
    fn next_hops() -> &'static Array<NextHopOf<Self>, { MAX_SERVERS as usize }> {
        &NEXT_HOPS6
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<FlowOf<Self>, 2> {
        &SCRATCH6
    }
    #[inline(always)]
    fn frontend(key: &FrontendKeyOf<Self>) -> Option<&'static Frontend> {
        // SAFETY: as for IPv4.
        unsafe { FRONTENDS6.get(key) }
    }
    #[inline(always)]
    fn copy(dst: &mut Self, src: &Self) {
        // 16-bit words: every place an address lives is at least 2-aligned.
        let (d, s) = (dst as *mut Self as *mut u16, src as *const Self as *const u16);
        for i in 0..8 {
            unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
        }
    }
    #[inline(always)]
    fn is_loopback(&self) -> bool {
        *self == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    }
    #[inline(always)]
    fn fold32(&self) -> u32 {
        // The four native words XORed, read as 16-bit halves (an address is at least 2-aligned
        // wherever it lives): byte by byte, the compiler kept 16 values live, and spilled them.
        let p = self as *const Self as *const u16;
        let (mut lo, mut hi) = (0u16, 0u16);
        for i in 0..4 {
            unsafe {
                lo ^= core::ptr::read_volatile(p.add(2 * i));
                hi ^= core::ptr::read_volatile(p.add(2 * i + 1));
            }
        }
        // Little-endian BPF: a native word is its low half, then its high half.
        u32::from(lo) | u32::from(hi) << 16
    }
    #[inline(always)]
    fn replace(check: u16, old: &Self, new: &Self) -> u16 {
        checksum::replace128(check, old, new)
    }
    #[inline(always)]
    fn addrs(ip: *const Ipv6Hdr) -> (*mut Self, *mut Self) {
        let ip = ip as *mut Ipv6Hdr;
        unsafe { (&raw mut (*ip).src_addr, &raw mut (*ip).dst_addr) }
    }
    #[inline(always)]
    fn translate(ip: *mut Ipv6Hdr, tcp_check: u16, new: &[Self; 2]) -> u16 {
        // The kernel's `bpf_csum_diff` over both addresses at once (32 bytes, contiguous in the
        // header and in the flow entry), as Cilium does: the same sum as RFC 1624 word by word,
        // without 32 values live at once on a 512-byte stack. One's complement sums do not
        // depend on byte order: the field is handed over as it lies in the packet.
        let old = unsafe { &raw mut (*ip).src_addr } as *mut u32;
        let to = new.as_ptr() as *mut u32;
        let seed = u32::from(!u16::from_ne_bytes(tcp_check.to_be_bytes()));
        let sum = unsafe { bpf_csum_diff(old, 32, to, 32, seed) } as u32;
        let folded = (sum & 0xffff) + (sum >> 16);
        let folded = ((folded & 0xffff) + (folded >> 16)) as u16;
        // No header checksum in IPv6.
        unsafe {
            (*ip).src_addr = new[0];
            (*ip).dst_addr = new[1];
        }
        u16::from_be_bytes((!folded).to_ne_bytes())
    }
    #[inline(always)]
    fn may_fragment(_ip: *const Ipv6Hdr) -> bool {
        false
    }
    #[inline(always)]
    fn fib(fib: &mut FibParams, ip: *const Ipv6Hdr, ip_len: u32, src: &Self, dst: &Self) {
        fib.family = AF_INET6;
        fib.__bindgen_anon_1.tot_len = ip_len as u16;
        // Traffic class and flow label, as the header has them (the helper takes them in
        // network order, the version nibble cleared).
        let vcf = unsafe { (*ip).vcf };
        fib.__bindgen_anon_2.flowinfo = u32::from_ne_bytes([vcf[0] & 0x0f, vcf[1], vcf[2], vcf[3]]);
        fib.__bindgen_anon_3.ipv6_src = words(src);
        fib.__bindgen_anon_4.ipv6_dst = words(dst);
    }
    #[inline(always)]
    fn write_header(ip: *mut Ipv6Hdr, src: Self, dst: Self, tcp_len: usize) {
        let ip = unsafe { &mut *ip };
        ip.vcf = [0x60, 0, 0, 0];
        ip.payload_len = (tcp_len as u16).to_be_bytes();
        ip.next_hdr = IPPROTO_TCP;
        ip.hop_limit = 64;
        ip.src_addr = src;
        ip.dst_addr = dst;
    }
    #[inline(always)]
    fn tcp_checksum(ip: *const Ipv6Hdr, segment: &[u8]) -> u16 {
        // `bpf_csum_diff` sums what it is given (nothing taken away): the addresses as they lie
        // in the header, the rest of the pseudo-header (length, next header), the segment. The
        // segments built here are a whole number of 32-bit words.
        let len = segment.len() as u32;
        let mut tail = [0u8; 8];
        tail[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        tail[7] = IPPROTO_TCP;
        let addrs = unsafe { &raw const (*ip).src_addr } as *mut u32;
        let empty = core::ptr::null_mut();
        let sum = unsafe {
            let sum = bpf_csum_diff(empty, 0, addrs, 32, 0) as u32;
            let sum = bpf_csum_diff(empty, 0, tail.as_mut_ptr() as *mut u32, 8, sum) as u32;
            bpf_csum_diff(empty, 0, segment.as_ptr() as *mut u32, len & !3, sum) as u32
        };
        let folded = (sum & 0xffff) + (sum >> 16);
        let folded = ((folded & 0xffff) + (folded >> 16)) as u16;
        u16::from_be_bytes((!folded).to_ne_bytes())
    }
    #[inline(always)]
    fn rst_allowed(src: &Self) -> bool {
        take_rst(&RST_LIMIT6, src)
    }
    #[inline(always)]
    fn admits(frontend: &Frontend, src: Self) -> bool {
        if frontend.flags & FRONTEND_F_ALLOWLIST == 0 {
            return true;
        }
        let key = AllowKey6 { frontend_id_be: frontend.frontend_id.to_be(), addr: src };
        ALLOW6.get(&Key::new(32 + 128, key)).is_some()
    }
}

/// An IPv6 address as the FIB helper's four 32-bit words (each in network order).
#[inline(always)]
fn words(a: &V6) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}
