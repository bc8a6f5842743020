//! The test process's surroundings: a private bpffs, and tests that must run alone in a
//! process of their own.

/// A private BPF filesystem mounted on a fresh temporary directory, for tests that pin
/// objects; unmounted (and the directory removed) on drop. Needs `CAP_SYS_ADMIN`; uses the
/// mount(2) system call, so no `mount` binary is needed.
pub struct PrivateBpffs {
    dir: std::path::PathBuf,
}

impl PrivateBpffs {
    /// Mounts a new bpffs instance on a new directory under the system's temporary directory.
    pub fn new() -> Result<Self, rustix::io::Errno> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bpf-ringbuf-bpffs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|_| rustix::io::Errno::IO)?;
        if let Err(errno) =
            rustix::mount::mount("bpf", &dir, "bpf", rustix::mount::MountFlags::empty(), None)
        {
            let _ = std::fs::remove_dir(&dir);
            return Err(errno);
        }
        Ok(PrivateBpffs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        // Detach even if a pin is still open elsewhere; the pins go with the instance.
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The environment variable that names the one test a process started by [`in_own_process`]
/// is for.
const OWN_PROCESS_ENV: &str = "BPF_RINGBUF_TEST_OWN_PROCESS";

/// For a test that disturbs its whole process (one that stops it with `SIGSTOP`, say), which
/// every other test of the same binary would feel: runs `test`, the caller's full name in the
/// test binary (`module::function`), alone in a new process of this executable and returns
/// `true` once it passed there, so the caller returns at once. In that process it returns
/// `false`, and the caller goes on to its body. Panics with the other process's output when
/// the test failed there, or when the name matched no test.
///
/// ```no_run
/// # use bpf_ringbuf_testkit as kit;
/// #[test]
/// fn wait_under_signals() {
///     if kit::in_own_process("hostile::wait_under_signals") {
///         return;
///     }
///     // ... stop and continue this process while it waits ...
/// }
/// ```
pub fn in_own_process(test: &str) -> bool {
    if std::env::var_os(OWN_PROCESS_ENV).is_some_and(|own| own == test) {
        return false;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("this test executable"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS_ENV, test)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("start {test} in a process of its own: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test}, alone in a process of its own, did not pass ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // What the test printed (its figures, or why it skipped), as if it had run here.
    eprint!("{stderr}");
    true
}
