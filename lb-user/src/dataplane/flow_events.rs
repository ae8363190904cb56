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

/// How often the ring is looked at when it was empty: events wait at most this long, and an
/// idle agent wakes 20 times a second.
const POLL: Duration = Duration::from_millis(50);

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
        std::thread::Builder::new().name("xdplb-flowlog".into()).spawn(move || loop {
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
                std::thread::sleep(POLL);
            }
        })?;
        Ok(())
    }
}
