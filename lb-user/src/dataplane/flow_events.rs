//! The data path's flow events, read: the `flow_events` ring buffer (a flow established, a flow
//! ended by a packet) and the sweep's expiries (a flow no packet ended), handed in order of
//! arrival to one consumer (the per-connection log) on a thread of their own. The ring buffer
//! has one reader, this one.

use std::{sync::mpsc, time::Duration};

use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use lb_common::{names, FlowEvent};

use super::maps::{take, MapsError};

/// How long the reader waits for the ring (which wakes it when the data path submits) before it
/// looks at the sweep's expiries: those wait at most this long, and an idle agent's reader wakes
/// once a second.
const WAIT: Duration = Duration::from_secs(1);

/// The ring buffer, taken from the loaded program.
pub struct FlowEvents {
    ring: RingBuf<MapData>,
}

impl FlowEvents {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Ok(FlowEvents { ring: take(ebpf, names::FLOW_EVENTS)? })
    }

    /// Reads the ring and `expired` until `expired`'s senders are gone, giving each event to
    /// `consume`.
    pub fn spawn(
        mut self,
        expired: mpsc::Receiver<FlowEvent>,
        mut consume: impl FnMut(&FlowEvent) + Send + 'static,
    ) -> std::io::Result<()> {
        std::thread::Builder::new().name("xdplb-flowlog".into()).spawn(move || {
            super::sweeper::background();
            self.read(&expired, &mut consume);
        })?;
        Ok(())
    }

    /// The reader's loop: returns once `expired`'s senders are gone.
    fn read(&mut self, expired: &mpsc::Receiver<FlowEvent>, consume: &mut impl FnMut(&FlowEvent)) {
        loop {
            let mut any = false;
            while let Some(item) = self.ring.next() {
                any = true;
                if let Some(e) = super::sys::pod_read::<FlowEvent>(&item) {
                    consume(&e);
                }
            }
            loop {
                match expired.try_recv() {
                    Ok(e) => {
                        any = true;
                        consume(&e);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if !any {
                wait_readable(&self.ring, WAIT);
            }
        }
    }
}

/// Waits until the ring has data or `wait` passed (`poll(2)` on its descriptor).
fn wait_readable(ring: &RingBuf<MapData>, wait: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd as _;
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
    // An error (EINTR) only means looking again sooner.
    let _ = poll(&mut fds, PollTimeout::from(ms));
}
