//! The "From aya" snippet of the README and of `docs/ecosystem.md`, compiled (never run) with
//! this example so that it cannot drift from what aya accepts: `.ci/run` checks that both
//! documents show exactly the lines between the markers.

#![allow(dead_code)]

pub fn from_aya(object: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    // snippet begin
    use aya::maps::Map;
    use aya::programs::TracePoint;
    use aya::EbpfLoader;
    use bpf_ringbuf::{RingBuf, UserRingBuf};

    // `object`: the ELF file's bytes, 8-byte aligned (`aya::include_bytes_aligned!`).
    let mut ebpf = EbpfLoader::new()
        .allow_unsupported_maps() // aya has no USER_RINGBUF type: without this, load() fails
        .load(object)?;
    let program: &mut TracePoint = ebpf
        .program_mut("handle_exec")
        .ok_or("no program")?
        .try_into()?;
    program.load()?;
    program.attach("sched", "sched_process_exec")?;

    // `&Map` and `&MapData` are not `AsFd`: match the variant, then take its `fd()`.
    let Some(Map::RingBuf(events)) = ebpf.map("events") else {
        return Err("no RINGBUF map named events".into());
    };
    let mut ring = RingBuf::new(events.fd())?; // duplicates the fd
    let Some(Map::Unsupported(commands)) = ebpf.map("commands") else {
        return Err("no USER_RINGBUF map named commands".into());
    };
    let producer = UserRingBuf::new(commands.fd())?;
    // snippet end
    ring.wait(Some(std::time::Duration::ZERO))?;
    drop(producer);
    Ok(())
}
