//! What a program does with the maps of `exec_events.bpf.c` once a BPF library (aya,
//! libbpf-rs, ...) has loaded and attached it: nothing here depends on the loader, only on two
//! map fds. Shared by `examples/aya` and `examples/libbpf-rs` (`#[path]`-included).
//!
//! It reads the RINGBUF `events` three ways — blocking [`RingBuf`], [`Poller`], tokio
//! [`AsyncRingBuf`] — and writes commands into the USER_RINGBUF `commands`, which the program
//! drains with `bpf_user_ringbuf_drain`. Each step causes events itself and checks that they
//! arrived: it runs `true` a few times and waits for an exec event with each child's pid (every
//! other process on the machine execs too, and those events are counted, not checked), or
//! writes commands and waits for the program to echo each cookie back.

use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::process::Command as Process;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bpf_ringbuf::{AsyncRingBuf, Poller, RingBuf, UserRingBuf};
use bytemuck::{Pod, Zeroable};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `EVENT_EXEC`: `value` is the exec's `bpf_ktime_get_ns()`.
pub const EVENT_EXEC: u32 = 1;
/// `EVENT_COMMAND`: the program drained a [`Command`]; `value` is its cookie.
pub const EVENT_COMMAND: u32 = 2;

/// `struct event` of exec_events.bpf.c. Record payloads are 8-byte aligned (see the crate's
/// `docs/protocol.md`, "Payload alignment"), so an event is read in place, not copied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Event {
    pub kind: u32,
    pub pid: u32,
    pub value: u64,
    pub comm: [u8; 16],
    pub filename: [u8; 64],
}

/// `struct command` of exec_events.bpf.c: what user space writes into `commands`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Command {
    pub cookie: u64,
}

// The C layout (no implicit padding), checked at compile time.
const _: () = {
    assert!(core::mem::size_of::<Event>() == 96);
    assert!(core::mem::offset_of!(Event, value) == 8);
    assert!(core::mem::offset_of!(Event, comm) == 16);
    assert!(core::mem::offset_of!(Event, filename) == 32);
    assert!(core::mem::size_of::<Command>() == 8);
};

fn text(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("?")
}

/// How many times each step runs `true`.
const EXECS: usize = 5;

/// Mounts tracefs at /sys/kernel/tracing if nothing is there: both loaders find a
/// tracepoint's id in it. (Most distributions mount it at boot; containers and minimal VMs
/// often do not.) It is left mounted.
pub fn ensure_tracefs() -> Result<()> {
    let tracing = std::path::Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    rustix::mount::mount(
        "tracefs",
        tracing,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|errno| format!("mount tracefs on {}: {errno}", tracing.display()))?;
    println!(
        "mounted tracefs on {} (it was not mounted)",
        tracing.display()
    );
    Ok(())
}

/// Runs every step against the program's two maps, `events` (the RINGBUF) and `commands` (the
/// USER_RINGBUF), as the loader hands them out: aya's `&MapFd`, libbpf-rs's `&Map`, or any
/// other `AsFd`. bpf-ringbuf duplicates the fd; nothing borrows the loader's objects.
pub fn run(events: impl AsFd + Copy, commands: impl AsFd + Copy) -> Result<()> {
    blocking(events)?;
    poller(events)?;
    tokio(events)?;
    user_ring(events, commands)?;
    Ok(())
}

/// Exec events seen while `true` runs [`EXECS`] times in another thread.
struct Tally {
    runner: Option<JoinHandle<std::io::Result<Vec<u32>>>>,
    /// The children's pids, once they all ran.
    ours: Option<Vec<u32>>,
    /// Every exec event so far: (pid, comm, filename).
    seen: Vec<(u32, String, String)>,
    deadline: Instant,
}

impl Tally {
    fn start() -> Self {
        let runner = std::thread::spawn(|| {
            let mut pids = Vec::with_capacity(EXECS);
            for _ in 0..EXECS {
                let mut child = Process::new("true").spawn()?;
                pids.push(child.id());
                child.wait()?;
            }
            Ok(pids)
        });
        Tally {
            runner: Some(runner),
            ours: None,
            seen: Vec::new(),
            deadline: Instant::now() + Duration::from_secs(20),
        }
    }

    /// Takes one record of `events`.
    fn record(&mut self, record: &[u8]) -> Result<()> {
        // In place: `try_from_bytes` checks the size and the alignment, and never copies.
        let event: &Event = bytemuck::try_from_bytes(record)?;
        if event.kind == EVENT_EXEC {
            let (comm, filename) = (text(&event.comm), text(&event.filename));
            self.seen
                .push((event.pid, comm.to_owned(), filename.to_owned()));
        }
        Ok(())
    }

    /// Whether every child's exec arrived; an error once the deadline passed without. Each
    /// child's record is committed inside its exec, before its `wait` returns, so once the
    /// children ran the rest is reading (a record of another process may still be BUSY in
    /// front of ours for a moment).
    fn done(&mut self) -> Result<bool> {
        if let Some(runner) = self.runner.take_if(|runner| runner.is_finished()) {
            self.ours = Some(runner.join().expect("exec thread")?);
        }
        if let Some(ours) = &self.ours {
            if ours
                .iter()
                .all(|pid| self.seen.iter().any(|(seen, ..)| seen == pid))
            {
                return Ok(true);
            }
        }
        if Instant::now() > self.deadline {
            return Err(format!("exec events missing after 20 s: pids {:?}", self.ours).into());
        }
        Ok(false)
    }

    fn report(&self, how: &str) -> Result<()> {
        let ours = self.ours.as_deref().unwrap_or_default();
        let mine: Vec<_> = self
            .seen
            .iter()
            .filter(|(pid, ..)| ours.contains(pid))
            .collect();
        for (pid, comm, filename) in &mine {
            if comm != "true" || !filename.ends_with("true") {
                return Err(format!("pid {pid}: exec of {filename:?} as {comm:?}").into());
            }
        }
        println!(
            "{how:<34} {} of {} execs of `true` arrived, with their pids {ours:?} \
             (and {} of other processes)",
            mine.len(),
            ours.len(),
            self.seen.len() - mine.len()
        );
        Ok(())
    }
}

/// A [`RingBuf`] of its own, waiting with `wait` and reading zero-copy batches.
fn blocking(events: impl AsFd) -> Result<()> {
    let mut ring = RingBuf::new(events)?;
    let mut tally = Tally::start();
    while !tally.done()? {
        ring.wait(Some(Duration::from_millis(100)))?;
        for record in &ring.batch() {
            tally.record(record?)?;
        }
    }
    tally.report("RingBuf (wait, batch):")
    // `ring` drops here: one reader per map and process, so the next step can open its own.
}

/// The same map through a [`Poller`] (which would watch many rings at once).
fn poller(events: impl AsFd) -> Result<()> {
    let mut poller = Poller::new()?;
    poller.add_ring(RingBuf::new(events)?)?;
    let mut tally = Tally::start();
    while !tally.done()? {
        let mut failed = None;
        poller.poll(
            Some(Duration::from_millis(100)),
            |_ring, record| match tally.record(record) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    failed = Some(error);
                    ControlFlow::Break(())
                }
            },
        )?;
        if let Some(error) = failed {
            return Err(error);
        }
    }
    tally.report("Poller (poll):")
}

/// The same map read from async code, [`AsyncRingBuf`] on a tokio runtime.
fn tokio(events: impl AsFd) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ring = AsyncRingBuf::new(RingBuf::new(events)?)?;
        let mut tally = Tally::start();
        while !tally.done()? {
            // Bounded, so that `done` is asked again when nothing arrives.
            let Ok(batch) =
                tokio::time::timeout(Duration::from_millis(100), ring.next_batch()).await
            else {
                continue;
            };
            for record in &batch? {
                tally.record(record?)?;
            }
        }
        tally.report("AsyncRingBuf (tokio, next_batch):")
    })
}

/// Commands into the USER_RINGBUF; the program drains them at the next exec on the machine
/// and echoes each cookie back through `events`.
fn user_ring(events: impl AsFd, commands: impl AsFd) -> Result<()> {
    let producer = UserRingBuf::new(commands)?;
    let mut ring = RingBuf::new(events)?;
    let cookies: Vec<u64> = (0..3)
        .map(|i| u64::from(std::process::id()) << 32 | 0xc0de_0000 | i)
        .collect();
    for &cookie in &cookies {
        let mut sample = producer.reserve(core::mem::size_of::<Command>())?;
        // Reservations are 8-byte aligned too: the command is written in place.
        *bytemuck::try_from_bytes_mut::<Command>(&mut sample[..])? = Command { cookie };
        sample.submit();
    }
    // Any exec on the machine drains the commands; run one to be sure there is one.
    let mut child = Process::new("true").spawn()?;
    child.wait()?;

    let mut echoed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cookies.iter().all(|cookie| echoed.contains(cookie)) {
        if Instant::now() > deadline {
            return Err(format!("cookies {cookies:x?} written, {echoed:x?} echoed").into());
        }
        ring.wait(Some(Duration::from_millis(100)))?;
        for record in &ring.batch() {
            let event: &Event = bytemuck::try_from_bytes(record?)?;
            if event.kind == EVENT_COMMAND && cookies.contains(&event.value) {
                echoed.push(event.value);
            }
        }
    }
    println!(
        "{:<34} {} commands written, drained by bpf_user_ringbuf_drain, {} echoed back",
        "UserRingBuf (reserve, submit):",
        cookies.len(),
        echoed.len()
    );
    Ok(())
}
