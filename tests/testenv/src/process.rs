//! Child processes that never outlive the test binary.
//!
//! Test binaries share one control plane through a `static`, and statics are never dropped, so
//! three layers make sure nothing is left running: `Drop` on [`Managed`] (for owned values), an
//! `atexit` hook (the test harness ends with `exit()`, also after failed tests), and
//! `PR_SET_PDEATHSIG` (the kernel kills the children if the test binary itself is killed).
//! PDEATHSIG fires when the *thread* that forked exits, so attached children are forked from
//! one long-lived thread rather than from whichever test thread came first.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

type Job = (Command, Sender<std::io::Result<Child>>);

/// A running child with its log file; killed on drop.
pub struct Managed {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Managed {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the process's log when it has already exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: tail(&self.log),
            }),
            _ => Ok(()),
        }
    }

    pub fn stop(&mut self) {
        terminate(self.child.id());
        let _ = self.child.wait();
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.child.id());
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `cmd` with stdout/stderr in `log`. Attached children die with this process;
/// detached ones (for `make env-up`) get their own session and outlive it.
pub fn start(name: &str, mut cmd: Command, log: &Path, detached: bool) -> Result<Managed, Error> {
    let file =
        File::create(log).map_err(|e| Error::Io(format!("create {}: {e}", log.display())))?;
    let err_file = file
        .try_clone()
        .map_err(|e| Error::Io(format!("clone log handle: {e}")))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(err_file);
    let child = if detached {
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn()
    } else {
        install_exit_hook();
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        spawn_from_reaper_thread(cmd)
    }
    .map_err(|e| Error::Io(format!("start {name}: {e}")))?;
    if !detached {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
    }
    Ok(Managed {
        name: name.to_string(),
        log: log.to_path_buf(),
        child,
    })
}

fn spawn_from_reaper_thread(cmd: Command) -> std::io::Result<Child> {
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                // Lives as long as the process, so PDEATHSIG fires only when the process dies.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn testenv-spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("testenv spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("testenv spawner thread is gone"))?
}

/// Registers the hook that stops every attached child at exit (idempotent), so a hook
/// registered after it runs before it.
pub fn ensure_exit_hook() {
    install_exit_hook();
}

fn install_exit_hook() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn; it only sends signals.
        unsafe {
            libc::atexit(kill_all_at_exit);
        }
    });
}

extern "C" fn kill_all_at_exit() {
    let pids: Vec<u32> = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        terminate(pid);
    }
    let dirs: Vec<PathBuf> = DIRS.lock().map(|v| v.clone()).unwrap_or_default();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `dir` when the process exits, after its children are stopped.
pub fn remove_at_exit(dir: &Path) {
    install_exit_hook();
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
}

/// SIGTERM, then SIGKILL if the process is still there after a short grace period.
pub fn terminate(pid: u32) {
    let pid = pid as libc::pid_t;
    // SAFETY: kill(2) with a pid we started.
    unsafe {
        if libc::kill(pid, libc::SIGTERM) != 0 {
            return;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // SAFETY: signal 0 only checks existence; waitpid reaps our own child.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            if libc::kill(pid, 0) != 0 {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Whether a pid (from a pid file) is alive.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// The error lines and the last lines of a log, for error messages: Kubernetes components log
/// every flag at start-up, so the real cause is rarely among the last lines alone.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with('E') || l.starts_with('F') || l.contains("\"level\":\"error\""))
        .collect();
    let from = lines.len().saturating_sub(15);
    let err_from = errors.len().saturating_sub(10);
    let mut out = String::new();
    if !errors.is_empty() {
        out.push_str("[errors]\n");
        out.push_str(&errors[err_from..].join("\n"));
        out.push_str("\n[last lines]\n");
    }
    out.push_str(&lines[from..].join("\n"));
    out
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Polls `check` until it returns true, the process dies (error with its log) or time runs out.
pub fn wait_until(
    proc: &mut Managed,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        if check() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                name: proc.name.clone(),
                log: tail(&proc.log),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP GET on loopback, for readiness probes that need no TLS.
pub fn http_ok(port: u16, path: &str) -> bool {
    http_ok_at(std::net::Ipv4Addr::LOCALHOST.into(), port, path)
}

/// [`http_ok`] on another local address (the pod bridge's).
pub fn http_ok_at(addr: std::net::IpAddr, port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect((addr, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}
