//! Starting an attempt's program without copying the server's address space.
//!
//! `fork` copies the page tables of the whole server (its heap, the memory-mapped log): at
//! hundreds of attempts a second that copy, and the copy-on-write faults after it, were most
//! of a trivial job's cost (BENCHMARKS.md). std's `Command` avoids it with `posix_spawn`
//! only when no code has to run in the child, but an attempt's child must start a session,
//! set rlimits and join its cgroup before exec. So this does what glibc's `posix_spawn`
//! does inside: `clone(CLONE_VM | CLONE_VFORK)` — the child borrows the parent's memory
//! until it execs while the calling thread waits — and in the child only async-signal-safe
//! calls on data prepared before the clone. Written here because no maintained crate
//! offers a spawn with such setup steps.
//!
//! The child is waited for through a pidfd (readable when it exits), so no thread blocks
//! on it; without pidfds (kernels before 5.3) a blocking wait runs on tokio's pool.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// What to run: the program (looked up in the environment's `PATH` when it has no `/`),
/// its arguments, its whole environment and its working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
}

/// What the child does between the clone and the exec.
#[derive(Debug, Default, Clone)]
pub struct Setup {
    /// Start a new session (and process group) led by the child.
    pub setsid: bool,
    /// `(resource, soft and hard limit)` pairs for `setrlimit`.
    pub rlimits: Vec<(libc::c_int, libc::rlim_t)>,
    /// `cgroup.procs` files to write "0" into (join those groups).
    pub cgroup_procs: Vec<CString>,
}

/// `PATH` for a program whose environment names none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Stack of the child between clone and exec (it calls a handful of syscalls).
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Everything the child touches, prepared by the parent before the clone.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    output: RawFd,
    setsid: bool,
    rlimits: *const (libc::c_int, libc::rlim_t),
    rlimits_len: usize,
    procs: *const *const libc::c_char,
    procs_len: usize,
    /// Set by the child when a step fails: the errno, and which step.
    err: libc::c_int,
    step: libc::c_int,
}

/// The child, between clone and exec. Only async-signal-safe libc calls on memory the
/// parent prepared: it runs on the parent's memory (and thread-local storage, whose
/// thread is suspended until the exec).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent waits (CLONE_VFORK).
    unsafe fn fail(a: &mut ChildArgs, step: libc::c_int) -> ! {
        a.err = *libc::__errno_location();
        a.step = step;
        libc::_exit(127)
    }
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.output, 1) < 0 || libc::dup2(a.output, 2) < 0
        {
            fail(a, 1);
        }
        if a.setsid && libc::setsid() < 0 {
            fail(a, 2);
        }
        for k in 0..a.rlimits_len {
            let (resource, value) = *a.rlimits.add(k);
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource as _, &limit) != 0 {
                fail(a, 3);
            }
        }
        for k in 0..a.procs_len {
            let fd = libc::open(*a.procs.add(k), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                fail(a, 4);
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                fail(a, 4);
            }
        }
        if libc::chdir(a.cwd) != 0 {
            fail(a, 5);
        }
        // A standard start, as std's Command gives: handlers back to their defaults (the
        // server's are not the program's; Rust ignores SIGPIPE), nothing blocked.
        for sig in 1..64 {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                && (sa.sa_sigaction != libc::SIG_DFL && sa.sa_sigaction != libc::SIG_IGN
                    || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut dfl.sa_mask);
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(a, 6)
    }
}

fn cstring(s: &[u8], what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// The program's path: as given when it names a directory, else the first executable
/// file of that name on `path_var` (as execvp looks, but before the clone).
fn resolve(program: &OsStr, path_var: &str) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        let c = cstring(candidate.as_os_str().as_bytes(), "the program path")?;
        // SAFETY: a valid C string.
        if candidate.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} is not an executable file on PATH ({path_var})",
            program.to_string_lossy()
        ),
    ))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A started program: its pid and the read end of the pipe its stdout and stderr share.
pub struct Spawned {
    pub child: ChildProcess,
    pub output: OwnedFd,
}

/// Starts `launch` with `setup`. Its stdin is /dev/null; its stdout and stderr go, in the
/// order written, to the returned pipe.
///
/// The clone happens on a spawner thread, one of a few that live as long as the process
/// (see `spawner`): a child's parent-death signal — bubblewrap's `--die-with-parent` uses
/// `PR_SET_PDEATHSIG` — fires when the *thread* that cloned it exits, not the process,
/// and tokio's blocking pool threads exit after 10 s idle. Cloned there, every sandboxed
/// attempt was killed 10 s after it started. Called on a spawner thread (from a closure
/// given to [`on_spawner`]), it clones right there.
pub fn spawn(launch: &Launch, setup: &Setup) -> io::Result<Spawned> {
    let (pid, output) = if spawner::ON_SPAWNER.get() {
        clone_child(launch, setup)?
    } else {
        spawner::clone_on_spawner(launch, setup)?
    };
    Ok(Spawned {
        child: ChildProcess::new(pid),
        output,
    })
}

/// Queues `work` for a spawner thread at once (not when the returned future is first
/// polled), to run inside the caller's tokio runtime (so it may spawn tasks and register
/// file descriptors); the future yields its result. A start's file-system work and its
/// clone run on one thread, with one hand-over each way.
pub fn on_spawner<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = io::Result<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    let queued = spawner::submit(Box::new(move || {
        let _runtime = handle.enter();
        let _ = tx.send(work());
    }));
    async move {
        queued?;
        rx.await
            .map_err(|_| io::Error::other("a spawner thread dropped the work (it panicked)"))
    }
}

/// The threads every child is cloned from.
mod spawner {
    use super::*;
    use std::cell::Cell;
    use std::sync::OnceLock;

    /// Spawner threads. A few, so a start slowed by its file system (a large directory
    /// left by a crash to remove) does not hold up every other start.
    pub(super) const SPAWNER_THREADS: usize = 8;

    pub(super) type Work = Box<dyn FnOnce() + Send>;

    thread_local! {
        /// Set on the spawner threads.
        pub(super) static ON_SPAWNER: Cell<bool> = const { Cell::new(false) };
    }

    /// A multi-consumer queue (crossbeam's: one idle thread is woken per item, where a
    /// std receiver behind a mutex would wake a second one to take the lock).
    static QUEUE: OnceLock<crossbeam_channel::Sender<Work>> = OnceLock::new();

    fn start() -> crossbeam_channel::Sender<Work> {
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        for i in 0..SPAWNER_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("cathedral-spawn{i}"))
                .spawn(move || {
                    ON_SPAWNER.set(true);
                    // Lives until the process ends: its children's parent-death signal
                    // is then the process's death. A panicking piece of work is caught,
                    // so the thread outlives it.
                    for work in rx {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                    }
                })
                .expect("start a spawner thread");
        }
        tx
    }

    pub(super) fn submit(work: Work) -> io::Result<()> {
        QUEUE
            .get_or_init(start)
            .send(work)
            .map_err(|_| io::Error::other("the spawner threads are gone"))
    }

    /// Clones `launch` on a spawner thread and waits for it: the child's pid and the read
    /// end of its output pipe.
    pub(super) fn clone_on_spawner(launch: &Launch, setup: &Setup) -> io::Result<(i32, OwnedFd)> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let (launch, setup) = (launch.clone(), setup.clone());
        submit(Box::new(move || {
            let _ = reply.send(clone_child(&launch, &setup));
        }))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the spawner threads are gone"))?
    }
}

thread_local! {
    /// The stack a child runs on between its clone and its exec: one per thread that
    /// clones, made once (a fresh 64 KiB per clone would be a zeroed allocation and its
    /// return to the system, with the TLB shootdowns that costs, for every attempt). The
    /// thread is suspended while its child runs on it (CLONE_VFORK), so one is enough.
    static CHILD_STACK: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; CHILD_STACK_BYTES].into_boxed_slice());
}

/// `/dev/null`, opened once (close-on-exec; each child dups it to its stdin).
fn dev_null() -> io::Result<&'static std::fs::File> {
    static DEV_NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(f) = DEV_NULL.get() {
        return Ok(f);
    }
    let f = std::fs::File::open("/dev/null")?;
    Ok(DEV_NULL.get_or_init(|| f))
}

/// Clones and execs `launch` with `setup` on the calling thread: the child's pid and the
/// read end of its output pipe.
///
/// Long on purpose: everything the vforked child will read (paths, argv, envp, limits) is
/// prepared here, the signal mask is held around the clone, and the child's error is read
/// back, in one function, so each `unsafe` block sits next to the invariant it relies on.
fn clone_child(launch: &Launch, setup: &Setup) -> io::Result<(i32, OwnedFd)> {
    let path_var = launch
        .env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or(DEFAULT_PATH);
    let path = cstring(
        resolve(&launch.program, path_var)?.as_os_str().as_bytes(),
        "the program path",
    )?;
    let mut argv_c = vec![cstring(launch.program.as_bytes(), "the program")?];
    for a in &launch.args {
        argv_c.push(cstring(a.as_bytes(), "an argument")?);
    }
    let envp_c: Vec<CString> = launch
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "the environment"))
        .collect::<io::Result<_>>()?;
    let cwd = cstring(launch.cwd.as_os_str().as_bytes(), "the working directory")?;
    let null_terminated = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = null_terminated(&argv_c);
    let envp = null_terminated(&envp_c);
    let procs: Vec<*const libc::c_char> = setup.cgroup_procs.iter().map(|c| c.as_ptr()).collect();
    let devnull = dev_null()?;
    let (read_end, write_end) = pipe()?;
    let mut args = ChildArgs {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdin: devnull.as_raw_fd(),
        output: write_end.as_raw_fd(),
        setsid: setup.setsid,
        rlimits: setup.rlimits.as_ptr(),
        rlimits_len: setup.rlimits.len(),
        procs: procs.as_ptr(),
        procs_len: procs.len(),
        err: 0,
        step: 0,
    };
    // No signal handler may run in the child while it borrows the parent's memory: block
    // them all in this thread around the clone (the child unblocks after resetting them).
    // SAFETY: plain signal-mask calls with valid pointers; `child_main` keeps to the rules
    // above; `args`, the stack and everything they point to outlive the child's use
    // (CLONE_VFORK suspends this thread until the child execs or exits).
    let pid = CHILD_STACK.with_borrow_mut(|stack| unsafe {
        // The stack grows down on every architecture this builds for; 16-byte aligned.
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut ChildArgs).cast(),
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            Err(clone_err)
        } else {
            Ok(pid)
        }
    })?;
    drop(write_end);
    // SAFETY: the child is done with `args` (it exec'd or exited).
    let (err, step) = unsafe {
        (
            std::ptr::read_volatile(&args.err),
            std::ptr::read_volatile(&args.step),
        )
    };
    if err != 0 || step != 0 {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let what = match step {
            1 => "redirect its output",
            2 => "start a session",
            3 => "set its rlimits",
            4 => "join its cgroup",
            5 => "enter its working directory",
            _ => "exec",
        };
        let e = io::Error::from_raw_os_error(err);
        return Err(io::Error::new(e.kind(), format!("cannot {what}: {e}")));
    }
    Ok((pid, read_end))
}

/// A child started by [`spawn`], waited for without blocking a thread, killed if dropped
/// before it was waited for.
pub struct ChildProcess {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    blocking: Option<JoinHandle<io::Result<ExitStatus>>>,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    fn new(pid: i32) -> ChildProcess {
        // SAFETY: pidfd_open on our own, not yet reaped, child.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        let pidfd = (fd >= 0)
            // SAFETY: just opened and owned here.
            .then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same for
            // the AsyncFd's life.
            .and_then(|fd| unsafe {
                AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).ok()
            });
        ChildProcess {
            pid,
            pidfd,
            blocking: None,
            status: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to exit and reaps it. Cancel-safe: it can be called again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        if let Some(fd) = &self.pidfd {
            let status = loop {
                let mut ready = fd.readable().await?;
                if let Some(s) = reap(self.pid)? {
                    break s;
                }
                ready.clear_ready();
            };
            self.status = Some(status);
            return Ok(status);
        }
        let pid = self.pid;
        let handle = self.blocking.get_or_insert_with(|| {
            tokio::task::spawn_blocking(move || {
                let mut status = 0;
                // SAFETY: reaping our own child.
                match unsafe { libc::waitpid(pid, &mut status, 0) } {
                    p if p == pid => Ok(ExitStatus::from_raw(status)),
                    _ => Err(io::Error::last_os_error()),
                }
            })
        });
        let s = handle
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        self.blocking = None;
        self.status = Some(s);
        Ok(s)
    }
}

/// Reaps child `pid` if it has exited.
fn reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: reaping our own child.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        p if p == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.status.is_none() && self.blocking.is_none() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = reap(self.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn launch(program: &str, args: &[&str], dir: &Path) -> Launch {
        Launch {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: [("PATH".to_string(), DEFAULT_PATH.to_string())].into(),
            cwd: dir.to_path_buf(),
        }
    }

    async fn output(s: Spawned) -> (ExitStatus, String) {
        let mut child = s.child;
        let mut r = tokio::net::unix::pipe::Receiver::from_owned_fd(s.output).unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text).await.unwrap();
        (child.wait().await.unwrap(), text)
    }

    #[tokio::test]
    async fn runs_with_its_environment_directory_and_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(
            "sh",
            &["-c", "echo out; echo err >&2; pwd; echo $A; ulimit -n; test $(ps -o sid= -p $$) = $$ && echo leader"],
            dir.path(),
        );
        l.env.insert("A".into(), "b c".into());
        let s = spawn(
            &l,
            &Setup {
                setsid: true,
                rlimits: vec![(libc::RLIMIT_NOFILE as libc::c_int, 77)],
                cgroup_procs: Vec::new(),
            },
        )
        .unwrap();
        let (status, text) = output(s).await;
        assert!(status.success(), "{status:?} {text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..2], ["out", "err"]);
        assert_eq!(
            Path::new(lines[2]).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
        assert_eq!(lines[3], "b c");
        assert_eq!(lines[4], "77");
        if lines.len() > 5 {
            assert_eq!(lines[5], "leader");
        }
    }

    #[tokio::test]
    async fn exit_codes_signals_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = output(
            spawn(
                &launch("sh", &["-c", "exit 3"], dir.path()),
                &Setup::default(),
            )
            .unwrap(),
        )
        .await;
        assert_eq!(s.code(), Some(3));
        let (s, _) = output(
            spawn(
                &launch("sh", &["-c", "kill -9 $$"], dir.path()),
                &Setup::default(),
            )
            .unwrap(),
        )
        .await;
        assert_eq!(s.signal(), Some(9));
        // SIGPIPE is the default again in the child (the server ignores it).
        let (s, _) = output(
            spawn(
                &launch(
                    "sh",
                    &["-c", "yes | head -c 1 >/dev/null; exit 0"],
                    dir.path(),
                ),
                &Setup::default(),
            )
            .unwrap(),
        )
        .await;
        assert!(s.success());
        let e = spawn(
            &launch("no-such-program-x", &[], dir.path()),
            &Setup::default(),
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let mut bad = launch("true", &[], dir.path());
        bad.cwd = dir.path().join("missing");
        let e = spawn(&bad, &Setup::default()).err().unwrap();
        assert!(e.to_string().contains("working directory"), "{e}");
        let e = spawn(
            &launch("true", &[], dir.path()),
            &Setup {
                cgroup_procs: vec![CString::new("/nonexistent/cgroup.procs").unwrap()],
                ..Setup::default()
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("cgroup"), "{e}");
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let s = spawn(&launch("sleep", &["30"], dir.path()), &Setup::default()).unwrap();
        let pid = s.child.id() as i32;
        drop(s);
        // Killed and reaped (or about to be): no process with that pid runs `sleep 30`.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "the child outlived its handle");
    }
}
