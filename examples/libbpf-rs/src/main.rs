//! bpf-ringbuf with libbpf-rs: libbpf loads and attaches the program, bpf-ringbuf reads and
//! writes its rings.
//!
//! The program (`../bpf/exec_events.bpf.c`, built by `../bpf/build.rs` with clang) runs on the
//! tracepoint `sched/sched_process_exec`: every exec on the machine becomes a record in the
//! RINGBUF `events`, and each exec first drains the USER_RINGBUF `commands`. What happens with
//! the two maps is `../bpf/exec_events.rs`, shared with the aya example.
//!
//! ```text
//! cargo run --manifest-path examples/libbpf-rs/Cargo.toml     # as root
//! ```

#[path = "../../bpf/exec_events.rs"]
mod exec_events;
mod snippet;

use libbpf_rs::{MapCore, ObjectBuilder};

use exec_events::Result;

/// The object file, 8-byte aligned as ELF64 headers are (`include_bytes!` alone promises no
/// alignment).
#[repr(C, align(8))]
struct ElfObject<const N: usize>([u8; N]);

const OBJECT_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exec_events.bpf.o"));
static OBJECT: ElfObject<{ OBJECT_BYTES.len() }> = ElfObject(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/exec_events.bpf.o"
)));

fn main() -> Result<()> {
    exec_events::ensure_tracefs()?;

    let object = ObjectBuilder::default().open_memory(&OBJECT.0)?.load()?;
    let program = object
        .progs_mut()
        .find(|program| program.name() == "handle_exec")
        .ok_or("no program handle_exec")?;
    // The section name, tracepoint/sched/sched_process_exec, tells libbpf where to attach.
    let _link = program.attach()?;

    // libbpf-rs maps are `AsFd`: hand them to bpf-ringbuf as they are (`RingBuf::new` and
    // `UserRingBuf::new` duplicate the fd, so nothing borrows `object` afterwards).
    let map = |name: &str| {
        object
            .maps()
            .find(|map| map.name() == name)
            .ok_or_else(|| format!("no map named {name}"))
    };
    let (events, commands) = (map("events")?, map("commands")?);
    println!("libbpf-rs loaded exec_events.bpf.o and attached it to sched/sched_process_exec");
    exec_events::run(&events, &commands)
    // `_link` and `object` drop last: the program is detached after the rings are closed.
}
