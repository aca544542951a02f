//! ktrace's capture file: pcapng with packets as Enhanced Packet Blocks and
//! everything else in Custom Blocks (see `docs/capture-format.md`), plus
//! readers for foreign pcap/pcapng files.
// OWNER: capture helper.
