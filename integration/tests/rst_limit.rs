//! The RST answered to a SYN no server can take is rate limited per source, through
//! BPF_PROG_TEST_RUN: a burst of `RST_BURST` RSTs, then the source's SYNs are dropped and
//! counted (`rst_limited`), while another source still gets its RST.

use std::net::Ipv4Addr;

use integration::{
    fixture::*,
    frames::{self, Tcp, SYN},
};
use lb_common::{Reason, RST_BURST};
use lb_user::dataplane;

const XDP_DROP: u32 = 1;

#[test]
fn rsts_to_one_source_are_limited_and_counted() {
    let fx = fixture();
    fx.ns.enter(|| {
        let l = fx.load(&|_| true);
        let down = l.topology.pool("down").unwrap().servers[0].id;
        drop(l);
        let _ = dataplane::remove_pins(&fx.pin_dir);
        let mut l = fx.load(&|id| id != down);
        let syn = |src: Ipv4Addr, port: u16| Tcp::new((src, port), (VIP, 16443), SYN).frame();
        // One source, many SYNs (new ports each time, as a scanner or a retrying client).
        let mut answered = 0;
        for i in 0..3 * RST_BURST {
            let (action, out) = l.run(&syn(CLIENT, 20000 + i as u16));
            match action {
                XDP_TX => {
                    answered += 1;
                    assert!(frames::checksums_valid(&out));
                    let t = frames::parse(&out).unwrap();
                    assert_eq!((t.dst, t.flags & 0x04), (CLIENT, 0x04), "a RST back to the client");
                }
                XDP_DROP => {}
                other => panic!("SYN {i}: action {other}"),
            }
        }
        // The run takes microseconds: at most one more token is earned meanwhile.
        assert!((RST_BURST..=RST_BURST + 1).contains(&answered), "{answered} RSTs answered");
        assert_eq!(l.reason(Reason::NoBackend), u64::from(answered));
        assert_eq!(
            l.reason(Reason::RstLimited),
            u64::from(3 * RST_BURST - answered),
            "what was not answered is counted"
        );
        // Another source is answered at once.
        let (action, _) = l.run(&syn(Ipv4Addr::new(198, 18, 0, 2), 40000));
        assert_eq!(action, XDP_TX, "another source has its own allowance");
        assert!(l.flows.entries().is_empty(), "no flow for a refused SYN");
    });
}
