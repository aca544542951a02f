//! Whether a `tp_btf` program may read packet bytes with direct loads:
//! since the `BPF_FEAT_RDONLY_CAST_TO_VOID` series (6.17) the verifier types
//! a pointer to a primitive in BTF, like `sk_buff::head`, as read-only
//! untrusted memory and turns loads through it into fault-safe `PROBE_MEM`
//! loads; 6.1 and 6.12 treat it as a scalar and refuse the load. The kernel
//! is asked directly: an 8-instruction `tp_btf` program on `kfree_skb` that
//! loads through `skb->head + skb->network_header` the way `drop_kfree_skb`
//! does is loaded (and closed) once. A kernel enum or version would not
//! prove the typing (the series and its selftests landed apart).

use std::os::fd::{FromRawFd, OwnedFd};

/// `BPF_PROG_LOAD`.
const PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_TRACING`.
const PROG_TYPE_TRACING: u32 = 26;
/// `BPF_TRACE_RAW_TP` (`tp_btf`).
const TRACE_RAW_TP: u32 = 23;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD` (up to
/// `attach_btf_obj_fd`), laid out as the kernel's `#[repr(C)]`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    pad: u32,
}

/// One instruction (`struct bpf_insn`): opcode, registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off.cast_unsigned()) << 16)
        | (u64::from(imm.cast_unsigned()) << 32)
}

/// The probe program: `skb = arg0; head = skb->head; nh =
/// skb->network_header; if head != 0 { *(u64 *)(head + nh) }; return 0`.
fn program(head_off: i16, nh_off: i16) -> [u64; 8] {
    const LDX_DW: u8 = 0x79;
    const LDX_H: u8 = 0x69;
    const JEQ_K: u8 = 0x15;
    const ADD_X: u8 = 0x0f;
    const MOV_K: u8 = 0xb7;
    const EXIT: u8 = 0x95;
    [
        insn(LDX_DW, 2, 1, 0, 0),
        insn(LDX_DW, 3, 2, head_off, 0),
        insn(LDX_H, 4, 2, nh_off, 0),
        insn(JEQ_K, 3, 0, 2, 0),
        insn(ADD_X, 3, 4, 0, 0),
        insn(LDX_DW, 0, 3, 0, 0),
        insn(MOV_K, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// Whether the running kernel loads the probe program. `attach_btf_id`:
/// the id of `btf_trace_kfree_skb` in the kernel's BTF; `head_off`,
/// `nh_off`: the offsets of `sk_buff::head` and `::network_header`.
#[must_use]
pub(super) fn supported(attach_btf_id: u32, head_off: u32, nh_off: u32) -> bool {
    let (Ok(head), Ok(nh)) = (i16::try_from(head_off), i16::try_from(nh_off)) else { return false };
    let prog = program(head, nh);
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"kt_pkt_load");
    let attr = ProgLoadAttr {
        prog_type: PROG_TYPE_TRACING,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: TRACE_RAW_TP,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` and what it points to outlive the call; the kernel
    // reads `size_of` bytes of it.
    let fd =
        unsafe { libc::syscall(libc::SYS_bpf, PROG_LOAD, &raw const attr, size_of::<ProgLoadAttr>() as libc::c_uint) };
    match i32::try_from(fd) {
        Ok(fd) if fd >= 0 => {
            // SAFETY: a file descriptor the kernel just returned to us.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            true
        }
        _ => {
            log::debug!("direct packet loads in tp_btf refused: {}", std::io::Error::last_os_error());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_like_the_kernel_header() {
        // r3 = *(u64 *)(r2 + 200): opcode 0x79, dst 3, src 2, off 200.
        assert_eq!(insn(0x79, 3, 2, 200, 0), 0x0000_0000_00c8_2379);
        // if r3 == 0 goto +2
        assert_eq!(insn(0x15, 3, 0, 2, 0), 0x0000_0000_0002_0315);
        assert_eq!(size_of::<ProgLoadAttr>(), 120);
    }
}
