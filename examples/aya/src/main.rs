//! bpf-ringbuf with aya: aya loads and attaches the program, bpf-ringbuf reads and writes its
//! rings.
//!
//! The program (`../bpf/exec_events.bpf.c`, built by `../bpf/build.rs` with clang) runs on the
//! tracepoint `sched/sched_process_exec`: every exec on the machine becomes a record in the
//! RINGBUF `events`, and each exec first drains the USER_RINGBUF `commands`. What happens with
//! the two maps is `../bpf/exec_events.rs`, shared with the libbpf-rs example.
//!
//! ```text
//! cargo run --manifest-path examples/aya/Cargo.toml     # as root
//! ```

#[path = "../../bpf/exec_events.rs"]
mod exec_events;
mod snippet;

use aya::maps::Map;
use aya::programs::TracePoint;
use aya::EbpfLoader;

use exec_events::Result;

fn main() -> Result<()> {
    exec_events::ensure_tracefs()?;

    let mut ebpf = EbpfLoader::new()
        // aya has no type of its own for BPF_MAP_TYPE_USER_RINGBUF, and refuses to load an
        // object with a map type it does not know unless told to: the map is then created as
        // usual and handed out as `Map::Unsupported`.
        .allow_unsupported_maps()
        .load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/exec_events.bpf.o"
        )))?;
    let program: &mut TracePoint = ebpf
        .program_mut("handle_exec")
        .ok_or("no program handle_exec")?
        .try_into()?;
    program.load()?;
    program.attach("sched", "sched_process_exec")?;

    // The maps are `aya::maps::Map` variants; the fd of their `MapData` is what bpf-ringbuf
    // takes (`RingBuf::new(impl AsFd)` duplicates it). Neither `&Map` nor `&MapData` is
    // `AsFd`: match the variant, then call `fd()`.
    let Some(Map::RingBuf(events)) = ebpf.map("events") else {
        return Err("no RINGBUF map named events".into());
    };
    let Some(Map::Unsupported(commands)) = ebpf.map("commands") else {
        return Err("no USER_RINGBUF map named commands".into());
    };
    println!("aya loaded exec_events.bpf.o and attached it to sched/sched_process_exec");
    exec_events::run(events.fd(), commands.fd())
    // `ebpf` drops last: the program is detached and the maps closed after the rings.
}
