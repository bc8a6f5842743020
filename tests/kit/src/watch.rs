//! Watching a ring from beside its one reader or producer: the kernel's wakeups, the
//! positions, and a second writer of `consumer_pos`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bpf_ringbuf_sys::Errno;

use crate::maps::page_size;

/// Epoll interest flags for [`SignalWatch::new`]: `IN` for a RINGBUF (data), `OUT` for a
/// USER_RINGBUF (space).
pub use bpf_ringbuf_sys::rustix::event::epoll::EventFlags;

/// Takes one event from the epoll set `epoll`, waiting up to `timeout` for it; returns whether
/// one came. The timeout is a deadline computed once: an interrupted `epoll_wait` (`EINTR`) is
/// retried with the time left, never with the whole timeout again.
///
/// Used on a [`SignalWatch`]'s own set, and on a reader's `epoll_fd()` to take a signal the
/// kernel already queued there (so that the reader's next wait counts only later ones).
pub fn epoll_signalled(epoll: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use bpf_ringbuf_sys::rustix::event::{epoll, Timespec};
    let deadline = std::time::Instant::now() + timeout;
    let mut events = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let left = Timespec::try_from(left).expect("timeout fits a timespec");
        match epoll::wait(epoll, &mut events[..], Some(&left)) {
            Ok(n) => return n > 0,
            Err(Errno::INTR) => continue,
            Err(errno) => panic!("epoll_wait: {errno}"),
        }
    }
}

/// An edge-triggered epoll set of its own on a ring map's fd: it sees the kernel's wakeups of
/// the map (`ringbuf_map_poll` readiness edges, raised by the kernel's irq_work) without
/// reading the ring, next to the ring's one reader or producer.
///
/// Create it *before* the step whose wakeup is in question: an edge after [`new`](Self::new)
/// is kept in the set until [`wait`](Self::wait) takes it. Readiness the fd already had when
/// the watch was made is dropped, so only signals sent after `new` count. As for every epoll
/// edge, the kernel re-polls the fd before reporting it: a signal for records that were read
/// before the `wait` is not reported.
pub struct SignalWatch {
    epoll: OwnedFd,
    /// A duplicate of the watched fd, so the registration lives as long as the watch.
    _fd: OwnedFd,
}

impl SignalWatch {
    /// Watches `fd` for `interest` (edge-triggered).
    pub fn new(fd: BorrowedFd<'_>, interest: EventFlags) -> Self {
        use bpf_ringbuf_sys::rustix::event::epoll;
        let fd = fd.try_clone_to_owned().expect("dup the watched fd");
        let set = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
        epoll::add(
            &set,
            &fd,
            epoll::EventData::new_u64(0),
            interest | epoll::EventFlags::ET,
        )
        .expect("add the fd to the watch's epoll set");
        // Adding a ready fd queues an event at once; it is no signal of the kernel's.
        epoll_signalled(set.as_fd(), std::time::Duration::ZERO);
        SignalWatch {
            epoll: set,
            _fd: fd,
        }
    }

    /// Whether the kernel signalled the fd since `new` or the last `wait` that returned
    /// `true`, waiting up to `timeout` for it (see [`epoll_signalled`]).
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        epoll_signalled(self.epoll.as_fd(), timeout)
    }
}

/// A RINGBUF's `consumer_pos`, mapped read-write as any process holding the map's fd may map
/// it: for tests that play the other writer the reader must detect.
pub struct ConsumerPosWriter(bpf_ringbuf_sys::Mapping);

impl ConsumerPosWriter {
    /// Maps the consumer page of `map` read-write.
    pub fn new(map: BorrowedFd<'_>) -> Self {
        let prot = rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE;
        Self(
            bpf_ringbuf_sys::Mapping::map_shared(map, 0, page_size(), prot)
                .expect("map the consumer page read-write"),
        )
    }

    fn word(&self) -> &std::sync::atomic::AtomicUsize {
        // SAFETY: the mapping is one page, page-aligned, read-write, and lives as long as
        // `self`; `consumer_pos` is its first word, shared with the kernel and the reader, so
        // it is only accessed atomically.
        unsafe { std::sync::atomic::AtomicUsize::from_ptr(self.0.as_ptr().as_ptr().cast()) }
    }

    /// Stores `position` as `consumer_pos`.
    pub fn store(&self, position: usize) {
        self.word()
            .store(position, std::sync::atomic::Ordering::SeqCst);
    }

    /// `consumer_pos` now.
    pub fn load(&self) -> usize {
        self.word().load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The read-write mapping of the consumer page, for tests of what the kernel lets a
    /// process do with it (`mremap`, `mprotect`).
    pub fn mapping(&self) -> &bpf_ringbuf_sys::Mapping {
        &self.0
    }
}

/// A ring map's two positions, watched through read-only mappings of its own: next to the
/// ring's one reader (the only one that may publish), for tests and benchmarks that need to see
/// the positions from another thread.
pub struct PositionWatch {
    consumer_page: bpf_ringbuf_sys::Mapping,
    producer_page: bpf_ringbuf_sys::Mapping,
}

impl PositionWatch {
    /// Maps the consumer page and the producer page of `map` read-only.
    pub fn new(map: BorrowedFd<'_>) -> Self {
        let page = bpf_ringbuf_sys::page_size();
        let read_only = rustix::mm::ProtFlags::READ;
        Self {
            consumer_page: bpf_ringbuf_sys::Mapping::map_shared(map, 0, page, read_only)
                .expect("map the consumer page read-only"),
            producer_page: bpf_ringbuf_sys::Mapping::map_shared(map, page as u64, page, read_only)
                .expect("map the producer page read-only"),
        }
    }

    fn word(page: &bpf_ringbuf_sys::Mapping) -> usize {
        // SAFETY: the page is mapped (and page-aligned) while `self` lives, and the kernel and
        // the reader access the word atomically; a relaxed load is sound on read-only memory.
        unsafe { std::sync::atomic::AtomicUsize::from_ptr(page.as_ptr().as_ptr().cast()) }
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `consumer_pos` now.
    pub fn consumer_pos(&self) -> usize {
        Self::word(&self.consumer_page)
    }

    /// `producer_pos` now.
    pub fn producer_pos(&self) -> usize {
        Self::word(&self.producer_page)
    }
}
