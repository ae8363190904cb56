//! The sync protocol's datagrams: a fixed header, records, and an HMAC-SHA256 over both with
//! the shared key. Everything is checked before a record is believed: size first (bounded both
//! ways), then the MAC (constant time), then magic, version and kind, then the record count
//! against the length. Records are the kernel's own entries, so the version also names their
//! layout: peers on different versions drop each other's messages and count them.

use lb_common::{Flow, FlowKey};
use ring::hmac;

use crate::dataplane::{flows::FlowPair, pod_bytes as bytes_of, pod_read as read};

pub const MAGIC: [u8; 4] = *b"XLBS";
/// Bumped whenever the header or a record changes (`Flow`'s layout among them).
pub const VERSION: u8 = 1;
/// One datagram never exceeds this (below a 1500-byte MTU with IP and UDP headers).
pub const MAX_DATAGRAM: usize = 1400;
pub const HEADER: usize = 36;
pub const MAC: usize = 32;
const KEY: usize = size_of::<FlowKey>();
const ENTRY: usize = size_of::<Flow>();
/// A flow: both keys and both entries.
pub const FLOW_RECORD: usize = 2 * (KEY + ENTRY);
/// Flows per datagram.
pub const FLOWS_PER_DATAGRAM: usize = (MAX_DATAGRAM - HEADER - MAC) / FLOW_RECORD;

/// What a datagram says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// I am here (every second): the sender's session and its view of the configuration.
    Hello = 1,
    /// Flows the sender handles (new ones, a dump, a refresh).
    Flows = 2,
    /// Flows the sender saw end.
    Closed = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// The sender's `node` number.
    pub node: u32,
    /// Random per agent start: a new one means the peer restarted and needs a full dump.
    pub session: u64,
    pub seq: u64,
    /// The sender's ids of frontends, pools and servers, hashed: flows carry ids, so peers
    /// must agree on them (same configuration).
    pub fingerprint: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub flows: Vec<FlowPair>,
}

/// Why a datagram was dropped (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Dropped {
    #[error("shorter than a header and its MAC")]
    Truncated,
    #[error("larger than {MAX_DATAGRAM} bytes")]
    Oversized,
    #[error("bad MAC (another key, or altered)")]
    BadMac,
    #[error("not an xdplb sync message")]
    BadMagic,
    #[error("protocol version not {VERSION}")]
    BadVersion,
    #[error("unknown kind")]
    BadKind,
    #[error("record count does not match the length")]
    BadLength,
}

impl Dropped {
    pub const ALL: [Dropped; 7] = [
        Dropped::Truncated,
        Dropped::Oversized,
        Dropped::BadMac,
        Dropped::BadMagic,
        Dropped::BadVersion,
        Dropped::BadKind,
        Dropped::BadLength,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dropped::Truncated => "truncated",
            Dropped::Oversized => "oversized",
            Dropped::BadMac => "bad_mac",
            Dropped::BadMagic => "bad_magic",
            Dropped::BadVersion => "bad_version",
            Dropped::BadKind => "bad_kind",
            Dropped::BadLength => "bad_length",
        }
    }
}

/// The shared key, ready to sign and verify.
pub struct Key(hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

/// One datagram: header, records, MAC. `flows` must fit (`FLOWS_PER_DATAGRAM`).
pub fn encode(key: &Key, h: &Header, flows: &[FlowPair]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + flows.len() * FLOW_RECORD + MAC);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(h.kind as u8);
    out.extend_from_slice(&u16::try_from(flows.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&h.node.to_le_bytes());
    out.extend_from_slice(&h.session.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.fingerprint.to_le_bytes());
    for f in flows {
        out.extend_from_slice(bytes_of(&f.client_key));
        out.extend_from_slice(bytes_of(&f.client));
        out.extend_from_slice(bytes_of(&f.server_key));
        out.extend_from_slice(bytes_of(&f.server));
    }
    seal(key, out)
}

/// `body` with its MAC appended (what `encode` sends; tests use it to make messages that are
/// authentic but wrong inside).
pub fn seal(key: &Key, mut body: Vec<u8>) -> Vec<u8> {
    let tag = hmac::sign(&key.0, &body);
    body.extend_from_slice(tag.as_ref());
    body
}

fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at + N).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
}

/// A datagram checked and read, or why it was dropped.
pub fn decode(key: &Key, datagram: &[u8]) -> Result<Message, Dropped> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Dropped::Oversized);
    }
    let Some(body_len) = datagram.len().checked_sub(MAC).filter(|&n| n >= HEADER) else {
        return Err(Dropped::Truncated);
    };
    let (signed, tag) = datagram.split_at(body_len);
    hmac::verify(&key.0, signed, tag).map_err(|_| Dropped::BadMac)?;
    if le::<4>(signed, 0) != MAGIC {
        return Err(Dropped::BadMagic);
    }
    if signed.get(4) != Some(&VERSION) {
        return Err(Dropped::BadVersion);
    }
    let kind = match signed.get(5) {
        Some(1) => Kind::Hello,
        Some(2) => Kind::Flows,
        Some(3) => Kind::Closed,
        _ => return Err(Dropped::BadKind),
    };
    let count = usize::from(u16::from_le_bytes(le(signed, 6)));
    if signed.len() != HEADER + count * FLOW_RECORD || (kind == Kind::Hello && count != 0) {
        return Err(Dropped::BadLength);
    }
    let header = Header {
        kind,
        node: u32::from_le_bytes(le(signed, 8)),
        session: u64::from_le_bytes(le(signed, 12)),
        seq: u64::from_le_bytes(le(signed, 20)),
        fingerprint: u64::from_le_bytes(le(signed, 28)),
    };
    let mut flows = Vec::with_capacity(count);
    for rec in signed.get(HEADER..).unwrap_or_default().chunks_exact(FLOW_RECORD) {
        let at = |i: usize| rec.get(i..).unwrap_or_default();
        let (Some(client_key), Some(client), Some(server_key), Some(server)) =
            (read(at(0)), read(at(KEY)), read(at(KEY + ENTRY)), read(at(2 * KEY + ENTRY)))
        else {
            return Err(Dropped::BadLength);
        };
        flows.push(FlowPair { client_key, client, server_key, server });
    }
    Ok(Message { header, flows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: u8) -> FlowPair {
        let client_key =
            FlowKey { src_addr: [198, 18, 0, n], dst_addr: [198, 18, 0, 100], src_port_be: 1, dst_port_be: 2 };
        let client = Flow { new_dst_addr: [198, 18, 1, 1], server_id: 3, bytes: 77, ..Flow::default() };
        FlowPair { client_key, client, server_key: client.peer_key(), server: Flow { direction: 1, ..client } }
    }

    fn header(kind: Kind) -> Header {
        Header { kind, node: 1, session: 42, seq: 7, fingerprint: 99 }
    }

    #[test]
    fn a_message_reads_back_as_written() {
        let key = Key::new(b"0123456789abcdef");
        let flows: Vec<FlowPair> = (0..u8::try_from(FLOWS_PER_DATAGRAM).unwrap()).map(pair).collect();
        let d = encode(&key, &header(Kind::Flows), &flows);
        assert!(d.len() <= MAX_DATAGRAM, "{}", d.len());
        let m = decode(&key, &d).unwrap();
        assert_eq!(m.header, header(Kind::Flows));
        assert_eq!(m.flows, flows);
    }

    #[test]
    fn bad_datagrams_are_dropped_for_their_reason() {
        let key = Key::new(b"0123456789abcdef");
        let good = encode(&key, &header(Kind::Flows), &[pair(1)]);
        assert_eq!(decode(&Key::new(b"another key, 16+"), &good), Err(Dropped::BadMac));
        let mut flipped = good.clone();
        flipped[HEADER + 3] ^= 1;
        assert_eq!(decode(&key, &flipped), Err(Dropped::BadMac));
        assert_eq!(decode(&key, &good[..HEADER]), Err(Dropped::Truncated));
        assert_eq!(decode(&key, &vec![0; MAX_DATAGRAM + 1]), Err(Dropped::Oversized));
        // Signed with the right key, but wrong inside.
        let resign = |mut b: Vec<u8>| {
            b.truncate(b.len() - MAC);
            seal(&key, b)
        };
        let mut v = good.clone();
        v[4] = VERSION + 1;
        assert_eq!(decode(&key, &resign(v)), Err(Dropped::BadVersion));
        let mut v = good.clone();
        v[5] = 9;
        assert_eq!(decode(&key, &resign(v)), Err(Dropped::BadKind));
        let mut v = good.clone();
        v[6] = 2;
        assert_eq!(decode(&key, &resign(v)), Err(Dropped::BadLength));
        let mut v = good;
        v[0] = b'Y';
        assert_eq!(decode(&key, &resign(v)), Err(Dropped::BadMagic));
    }
}
