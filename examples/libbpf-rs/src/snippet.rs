//! The "From libbpf-rs" snippet of the README and of `docs/ecosystem.md`, compiled (never run)
//! with this example so that it cannot drift from what libbpf-rs accepts: `.ci/run` checks
//! that both documents show exactly the lines between the markers.

#![allow(dead_code)]

pub fn from_libbpf_rs(object: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    // snippet begin
    use bpf_ringbuf::{RingBuf, UserRingBuf};
    use libbpf_rs::{MapCore, ObjectBuilder};

    // `object`: the ELF file's bytes (or `open_file(path)`).
    let object = ObjectBuilder::default().open_memory(object)?.load()?;
    let program = object
        .progs_mut()
        .find(|p| p.name() == "handle_exec")
        .ok_or("no program")?;
    let _link = program.attach()?; // the program stays attached while `_link` lives

    // libbpf-rs maps are `AsFd`: pass them as they are.
    let map = |name| object.maps().find(|map| map.name() == name);
    let events = map("events").ok_or("no map named events")?;
    let mut ring = RingBuf::new(&events)?; // duplicates the fd
    let commands = map("commands").ok_or("no map named commands")?;
    let producer = UserRingBuf::new(&commands)?;
    // snippet end
    ring.wait(Some(std::time::Duration::ZERO))?;
    drop(producer);
    Ok(())
}
