//! The BTF reader (`bpf::btf`) on any bytes: parsing, then every query
//! ktrace makes of the kernel's BTF (kernel offsets, drop-reason enums),
//! plus member and enum walks of the names the input defines.
#![no_main]

use ktrace::bpf::btf::{Btf, kernel_offsets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data.to_vec()) else { return };
    let _ = btf.type_count();
    let _ = kernel_offsets(&btf);
    let _ = btf.drop_reason_names();
    let _ = btf.drop_reason_name(0x0003_0007);
    for name in ["outer", "inner", "sk_buff", "task_struct", "sock", "net"] {
        let _ = btf.struct_members(name);
        let _ = btf.type_size(name);
    }
    let _ = btf.member_offset("outer", &["deep"]);
    let _ = btf.member_offset("outer", &["nested", "b"]);
    let _ = btf.enum_values("skb_drop_reason");
});
