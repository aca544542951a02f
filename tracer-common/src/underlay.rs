//! Underlay fingerprints (`underlay_egress` / `underlay_ingress`, tc/TCX):
//! a [`crate::PacketEvent`] with a `hook::TC_*` hook, carrying the packet's
//! first [`UNDERLAY_SNAP`] bytes from its IP header on (outer and, for VXLAN,
//! inner headers), never a payload.

/// Bytes of an underlay packet copied from its IP header on.
pub const UNDERLAY_SNAP: usize = 128;
const _: () = assert!(UNDERLAY_SNAP <= crate::SNAP_LEN && UNDERLAY_SNAP.is_power_of_two());
