//! TCP connection events: `conn_*` programs on the sock/tcp tracepoints
//! (state changes, resets, retransmits), fields at offsets from tracefs.

use core::ptr::read_volatile;

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{ConnEvent, EventKind, TpFields, conn_kind};

use crate::{
    IPPROTO_TCP, OFFSETS, TP_RECV_RESET, TP_RETRANSMIT, TP_SEND_RESET, TP_SET_STATE, count_lost, cpu_ring, init_header,
    kread, ring_output, task::fill_task, zero_words,
};

/// Reads a tracepoint field at `off` if present.
#[inline(always)]
fn tp_field<T: Copy + Default>(ctx: &TracePointContext, off: u16) -> T {
    if off == u16::MAX {
        return T::default();
    }
    // SAFETY: offset from the tracepoint's own format description.
    unsafe { ctx.read_at::<T>(off as usize).unwrap_or_default() }
}

#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "saddr/daddr sit at 8-aligned offsets of an 8-aligned event")]
fn conn_event(ctx: &TracePointContext, f: &TpFields, what: u8) -> u32 {
    if f.protocol != u16::MAX && tp_field::<u16>(ctx, f.protocol) != u16::from(IPPROTO_TCP) {
        return 0;
    }
    if f.family == u16::MAX {
        crate::log::debug!("conn event {}: no address family field (not in this tracepoint's format)", what);
    }
    let mut slot = core::mem::MaybeUninit::<ConnEvent>::uninit();
    // SAFETY: the stack slot is 8-aligned and size_of::<ConnEvent>() bytes
    // (a multiple of 8, asserted in tracer-common); all-zero is a valid
    // ConnEvent (integers and byte arrays only).
    let ev = unsafe {
        zero_words(slot.as_mut_ptr().cast(), size_of::<ConnEvent>() / 8);
        slot.assume_init_mut()
    };
    init_header(&mut ev.hdr, EventKind::Conn);
    ev.sock = tp_field::<u64>(ctx, f.skaddr);
    ev.what = what;
    ev.family = tp_field::<u16>(ctx, f.family) as u8;
    ev.sport = tp_field::<u16>(ctx, f.sport);
    ev.dport = tp_field::<u16>(ctx, f.dport);
    // SAFETY: saddr and daddr are 16 bytes at 8-aligned offsets (88, 104) of
    // the 8-aligned event; word stores, so no memcpy is emitted.
    unsafe {
        let sa = (&raw mut ev.saddr).cast::<u64>();
        let da = (&raw mut ev.daddr).cast::<u64>();
        if ev.family == 2 {
            sa.cast::<u32>().write_volatile(tp_field::<u32>(ctx, f.saddr));
            da.cast::<u32>().write_volatile(tp_field::<u32>(ctx, f.daddr));
        } else {
            let at = |off: u16, i: u16| if off == u16::MAX { off } else { off + 8 * i };
            sa.write_volatile(tp_field::<u64>(ctx, f.saddr_v6));
            sa.add(1).write_volatile(tp_field::<u64>(ctx, at(f.saddr_v6, 1)));
            da.write_volatile(tp_field::<u64>(ctx, f.daddr_v6));
            da.add(1).write_volatile(tp_field::<u64>(ctx, at(f.daddr_v6, 1)));
        }
    }
    if what == conn_kind::STATE {
        ev.old_state = tp_field::<i32>(ctx, f.oldstate) as u8;
        ev.new_state = tp_field::<i32>(ctx, f.newstate) as u8;
    } else if f.state != u16::MAX {
        ev.old_state = tp_field::<i32>(ctx, f.state) as u8;
    } else {
        // SAFETY: loader-written global; probe read of the socket's state.
        let off = unsafe { read_volatile(&raw const OFFSETS) };
        if off.skb_valid != 0 && ev.sock != 0 {
            // SAFETY: as above.
            ev.old_state = unsafe { kread::<u8>(ev.sock, off.sock_state) }.unwrap_or(0);
        }
    }
    // connect() (CLOSE → SYN_SENT) runs in the connecting process; resets and
    // most retransmits run in softirq, where "current" is whoever was interrupted.
    let process_ctx = what == conn_kind::STATE && ev.new_state == 2;
    crate::log::trace!(
        "conn event {}: state {} -> {} port {} -> {}",
        what,
        ev.old_state,
        ev.new_state,
        ev.sport,
        ev.dport
    );
    if process_ctx {
        let (ino, fl) = fill_task(&mut ev.hdr, false);
        ev.netns_ino = ino;
        ev.hdr.flags |= fl;
    }
    // SAFETY: a plain value of its own size.
    if !unsafe { ring_output(cpu_ring(), core::ptr::from_mut(ev).cast(), size_of::<ConnEvent>() as u64) } {
        count_lost();
    }
    0
}

/// `sock:inet_sock_set_state`: TCP state changes (connect, established, close).
#[tracepoint]
fn conn_set_state(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_SET_STATE) };
    conn_event(&ctx, &f, conn_kind::STATE)
}

/// `tcp:tcp_receive_reset`: an RST arrived (refused connect or reset connection).
#[tracepoint]
fn conn_recv_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_RECV_RESET) };
    conn_event(&ctx, &f, conn_kind::RESET_RECEIVED)
}

/// `tcp:tcp_send_reset`: this host sent an RST.
#[tracepoint]
fn conn_send_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_SEND_RESET) };
    conn_event(&ctx, &f, conn_kind::RESET_SENT)
}

/// `tcp:tcp_retransmit_skb`: a segment (in `SYN_SENT`: a SYN) was retransmitted.
#[tracepoint]
fn conn_retransmit(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_RETRANSMIT) };
    conn_event(&ctx, &f, conn_kind::RETRANSMIT)
}
