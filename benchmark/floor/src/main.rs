//! The syscall floor of the pi-crew-workspace-lock benchmark: the same jobs as the lock
//! libraries, done with the fewest syscalls a lockfile protocol allows, and nothing else
//! (no kernel lock, no race protection, no host identity). `node benchmark/run.mjs` drives
//! it through its command line and reads its timings as JSON from stdout.
//!
//! - acquire = open(O_CREAT|O_EXCL|O_WRONLY) + write + close; release = unlink
//! - busy check = open + read + close (or ENOENT)
//! - reclaim = getdents64 + per `*.lock` file openat/read/close (+ unlinkat when stale);
//!   a holder's liveness is read from /proc/<pid>/stat once per pid (cached)
//! - waiting = inotify on the lock directory (IN_DELETE) + a pidfd of the holder, so a
//!   release or the holder's death wakes the waiter at once
//!
//! Commands (times are in ns unless named `_ms`; `*_ms` timestamps are CLOCK_REALTIME):
//!   cycle <lockpath> <cycles> <warmup>     acquire+release, per-cycle timings
//!   cycle-link <lockpath> <cycles> <warmup> the same with a spare inode: acquire =
//!                                          pwrite(spare) + link(spare, lock); release = unlink
//!   busy <lockpath> <iterations>           busy check timings
//!   reclaim <dir> <heartbeat_stale_ms>     one sweep of <dir>
//!   peer <lockpath>                        line protocol on stdin/stdout (see `peer`)

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn die(what: &str) -> ! {
    eprintln!(
        "workspace-lock-floor: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(2)
}

fn cstr(p: &str) -> CString {
    CString::new(p).expect("path without NUL")
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn mono_ns() -> i128 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Wall-clock milliseconds (with fraction), the clock of the lockfile's heartbeat.
fn wall_ms() -> f64 {
    clock_ns(libc::CLOCK_REALTIME) as f64 / 1e6
}

/// `new Date(ms).toISOString()` for the lockfile's `acquiredAt`.
fn iso_string(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// `starttime` (field 22) of /proc/<pid>/stat times 10, as the original resolver gives it;
/// `None` when the process is gone. One open/read/close.
fn start_time(pid: i64) -> Option<f64> {
    let path = cstr(&format!("/proc/{pid}/stat"));
    let mut buf = [0u8; 1024];
    // SAFETY: valid path and buffer.
    let n = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    let text = &buf[..n as usize];
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 2..]).ok()?;
    // Field 3 is the first after ")"; starttime is field 22.
    let ticks: f64 = rest.split(' ').nth(19)?.parse().ok()?;
    Some((ticks * 10.0).floor())
}

/// The numeric value of `"key":` in a lockfile record (no full JSON parse: the floor).
fn field(text: &[u8], key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = text.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let end = text[at..]
        .iter()
        .position(|&b| b == b',' || b == b'}')
        .map_or(text.len(), |e| at + e);
    std::str::from_utf8(&text[at..end]).ok()?.parse().ok()
}

struct Lock {
    path: CString,
    dir: CString,
    pid: i64,
    start_time: Option<f64>,
    inotify: i32,
}

impl Lock {
    fn new(lockpath: &str) -> Lock {
        let dir = Path::new(lockpath)
            .parent()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_else(|| b".".to_vec());
        let pid = i64::from(std::process::id());
        Lock {
            path: cstr(lockpath),
            dir: CString::new(dir).expect("dir"),
            pid,
            start_time: start_time(pid),
            inotify: -1,
        }
    }

    fn record(&self) -> String {
        let now = wall_ms().floor();
        let start = self
            .start_time
            .map(|s| format!("\"startTime\":{s},"))
            .unwrap_or_default();
        format!(
            "{{\"pid\":{},{start}\"heartbeat\":{now},\"goalId\":\"floor\",\"acquiredAt\":\"{}\"}}",
            self.pid,
            iso_string(now as i64)
        )
    }

    /// open(O_CREAT|O_EXCL|O_WRONLY) + write + close. Err(errno) on failure.
    fn try_acquire(&self) -> Result<(), i32> {
        let record = self.record();
        // SAFETY: valid path and buffer.
        unsafe {
            let fd = libc::open(
                self.path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return Err(errno());
            }
            libc::write(fd, record.as_ptr().cast(), record.len());
            libc::close(fd);
        }
        Ok(())
    }

    fn release(&self) {
        // SAFETY: valid path.
        unsafe { libc::unlink(self.path.as_ptr()) };
    }

    /// open + read + close: the holder's record, or None (ENOENT).
    fn read(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: valid path and buffer.
        unsafe {
            let fd = libc::open(self.path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            Some(n.max(0) as usize)
        }
    }

    fn watch(&mut self) {
        if self.inotify >= 0 {
            return;
        }
        // SAFETY: plain syscalls on owned descriptors.
        unsafe {
            self.inotify = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            if self.inotify < 0 {
                die("inotify_init1");
            }
            if libc::inotify_add_watch(
                self.inotify,
                self.dir.as_ptr(),
                libc::IN_DELETE | libc::IN_MOVED_FROM,
            ) < 0
            {
                die("inotify_add_watch");
            }
        }
    }

    fn drain(&self) {
        let mut buf = [0u8; 4096];
        // SAFETY: non-blocking read into a valid buffer.
        while unsafe { libc::read(self.inotify, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    /// Waits until the lock is ours: woken by inotify when the lockfile is deleted, or by
    /// the holder's pidfd when it dies (then its lockfile is deleted: the floor's reclaim).
    fn acquire_wait(&mut self) {
        self.watch();
        let mut buf = [0u8; 1024];
        loop {
            self.drain();
            match self.try_acquire() {
                Ok(()) => return,
                Err(libc::EEXIST) => {}
                Err(_) => die("open lockfile"),
            }
            let holder = match self.read(&mut buf) {
                None => continue, // released meanwhile
                Some(n) => field(&buf[..n], "pid").map(|p| p as i64),
            };
            let mut pidfd = -1;
            if let Some(pid) = holder {
                // SAFETY: pidfd_open(2).
                pidfd =
                    unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as i32;
                if pidfd < 0 && errno() == libc::ESRCH {
                    self.release(); // holder already dead
                    continue;
                }
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.inotify,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let nfds = if pidfd >= 0 { 2 } else { 1 };
            // SAFETY: valid pollfd array; the 500 ms fallback is the package's default pollMs.
            unsafe { libc::poll(fds.as_mut_ptr(), nfds, 500) };
            if pidfd >= 0 {
                if fds[1].revents & libc::POLLIN != 0 {
                    self.release(); // holder died: delete its lockfile
                }
                // SAFETY: our descriptor.
                unsafe { libc::close(pidfd) };
            }
        }
    }
}

fn summary(mut samples: Vec<f64>) -> String {
    samples.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    format!(
        "\"n\":{},\"median_ns\":{:.0},\"p10_ns\":{:.0},\"p90_ns\":{:.0},\"mean_ns\":{:.0}",
        samples.len(),
        q(0.5),
        q(0.1),
        q(0.9),
        mean
    )
}

fn cycle(lockpath: &str, cycles: usize, warmup: usize) {
    let lock = Lock::new(lockpath);
    let mut samples = Vec::with_capacity(cycles);
    for i in 0..cycles + warmup {
        let t0 = mono_ns();
        if lock.try_acquire().is_err() {
            die("acquire (uncontended)");
        }
        lock.release();
        if i >= warmup {
            samples.push((mono_ns() - t0) as f64);
        }
    }
    println!("{{\"job\":\"cycle\",{}}}", summary(samples));
}

/// Acquire without creating an inode: the record is written into a spare file kept open,
/// which is then hard-linked into place (2 syscalls); release unlinks the lock's name.
fn cycle_link(lockpath: &str, cycles: usize, warmup: usize) {
    let lock = Lock::new(lockpath);
    let spare = CString::new(
        [
            lock.dir.as_bytes(),
            format!("/.floor-{}.spare", lock.pid).as_bytes(),
        ]
        .concat(),
    )
    .expect("spare path");
    // SAFETY: valid path.
    let fd = unsafe {
        libc::open(
            spare.as_ptr(),
            libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        die("open spare");
    }
    let mut samples = Vec::with_capacity(cycles);
    for i in 0..cycles + warmup {
        let t0 = mono_ns();
        let record = lock.record();
        // SAFETY: valid descriptor, buffer and paths.
        unsafe {
            libc::pwrite(fd, record.as_ptr().cast(), record.len(), 0);
            if libc::link(spare.as_ptr(), lock.path.as_ptr()) != 0 {
                die("link (uncontended)");
            }
        }
        lock.release();
        if i >= warmup {
            samples.push((mono_ns() - t0) as f64);
        }
    }
    // SAFETY: our descriptor and file.
    unsafe {
        libc::close(fd);
        libc::unlink(spare.as_ptr());
    }
    println!("{{\"job\":\"cycle-link\",{}}}", summary(samples));
}

fn busy(lockpath: &str, iterations: usize) {
    let lock = Lock::new(lockpath);
    let mut buf = [0u8; 1024];
    let mut samples = Vec::with_capacity(iterations);
    let mut held = false;
    for _ in 0..iterations {
        let t0 = mono_ns();
        held = lock.read(&mut buf).is_some();
        samples.push((mono_ns() - t0) as f64);
    }
    println!("{{\"job\":\"busy\",\"held\":{held},{}}}", summary(samples));
}

fn reclaim(dir: &str, stale_ms: f64) {
    let t0 = mono_ns();
    let now = wall_ms();
    let cdir = cstr(dir);
    // SAFETY: valid path.
    let dirfd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dirfd < 0 {
        die("open dir");
    }
    // getdents64 with a large buffer: every name first, then the files.
    let mut names: Vec<CString> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: valid descriptor and buffer.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dirfd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            die("getdents64");
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[]
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            // SAFETY: d_name is NUL-terminated within the record.
            let name = unsafe { CStr::from_ptr(buf[off + 19..].as_ptr().cast()) };
            if name.to_bytes().ends_with(b".lock") && name.to_bytes()[0] != b'.' {
                names.push(name.to_owned());
            }
            off += reclen;
        }
    }
    let mut alive: HashMap<i64, Option<f64>> = HashMap::new();
    let mut content = [0u8; 4096];
    let mut reclaimed = 0usize;
    for name in &names {
        // SAFETY: valid descriptor, name and buffer.
        let n = unsafe {
            let fd = libc::openat(
                dirfd,
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            );
            if fd < 0 {
                continue;
            }
            let n = libc::read(fd, content.as_mut_ptr().cast(), content.len());
            libc::close(fd);
            n.max(0) as usize
        };
        let text = &content[..n];
        let stale = match (field(text, "pid"), field(text, "heartbeat")) {
            (Some(pid), Some(heartbeat)) => {
                let pid = pid as i64;
                let current = *alive.entry(pid).or_insert_with(|| start_time(pid));
                let recorded = field(text, "startTime");
                now - heartbeat > stale_ms
                    || current.is_none()
                    || (recorded.is_some() && recorded != current)
            }
            _ => false, // unreadable: a claim being written; left alone like young corrupt files
        };
        if stale {
            // SAFETY: valid descriptor and name.
            unsafe { libc::unlinkat(dirfd, name.as_ptr(), 0) };
            reclaimed += 1;
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(dirfd) };
    let elapsed = mono_ns() - t0;
    println!(
        "{{\"job\":\"reclaim\",\"files\":{},\"reclaimed\":{reclaimed},\"elapsed_ns\":{elapsed},\"pids_probed\":{}}}",
        names.len(),
        alive.len()
    );
}

/// Line protocol (one command a line on stdin, one answer a line on stdout):
///   acquire            -> "waiting", then "acquired <wall_ms>"
///   release <delay_ms> -> sleeps, records the instant, unlinks: "released <wall_ms>"
///   contend <start_wall_ms> <end_wall_ms> <journal> <letter>
///                      -> from start, acquire/release until end; in each hold appends <LETTER> then
///                         <letter> to the journal; "done <cycles>"
///   exit
fn peer(lockpath: &str) {
    let mut lock = Lock::new(lockpath);
    lock.watch();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "ready").ok();
    out.flush().ok();
    for line in stdin.lock().lines() {
        let line = line.unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("acquire") => {
                writeln!(out, "waiting").ok();
                out.flush().ok();
                lock.acquire_wait();
                let t = wall_ms();
                writeln!(out, "acquired {t:.4}").ok();
            }
            Some("release") => {
                let delay: f64 = words.get(1).and_then(|d| d.parse().ok()).unwrap_or(0.0);
                std::thread::sleep(std::time::Duration::from_secs_f64(delay / 1000.0));
                let t = wall_ms();
                lock.release();
                writeln!(out, "released {t:.4}").ok();
            }
            Some("contend") => {
                let start: f64 = words[1].parse().expect("start");
                let end: f64 = words[2].parse().expect("end");
                let journal = cstr(words[3]);
                let letter = words[4].as_bytes()[0].to_ascii_lowercase();
                // SAFETY: valid path.
                let jfd = unsafe {
                    libc::open(
                        journal.as_ptr(),
                        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if jfd < 0 {
                    die("open journal");
                }
                let enter = [letter.to_ascii_uppercase()];
                let leave = [letter];
                let mut cycles = 0u64;
                let wait = (start - wall_ms()).max(0.0);
                std::thread::sleep(std::time::Duration::from_secs_f64(wait / 1000.0));
                loop {
                    lock.acquire_wait();
                    if wall_ms() >= end {
                        lock.release();
                        break;
                    }
                    // SAFETY: valid descriptor and buffers.
                    unsafe {
                        libc::write(jfd, enter.as_ptr().cast(), 1);
                        libc::write(jfd, leave.as_ptr().cast(), 1);
                    }
                    lock.release();
                    cycles += 1;
                }
                // SAFETY: our descriptor.
                unsafe { libc::close(jfd) };
                writeln!(out, "done {cycles}").ok();
            }
            Some("exit") | None => break,
            Some(other) => {
                eprintln!("workspace-lock-floor: unknown command {other}");
                std::process::exit(2)
            }
        }
        out.flush().ok();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!(
                "usage: workspace-lock-floor cycle|cycle-link|busy|reclaim|peer ARGS (see source)"
            );
            std::process::exit(2)
        })
    };
    let num = |i: usize| -> usize { arg(i).parse().expect("a number") };
    match arg(1) {
        "cycle" => cycle(arg(2), num(3), num(4)),
        "cycle-link" => cycle_link(arg(2), num(3), num(4)),
        "busy" => busy(arg(2), num(3)),
        "reclaim" => reclaim(arg(2), arg(3).parse().expect("stale ms")),
        "peer" => peer(arg(2)),
        other => {
            eprintln!("workspace-lock-floor: unknown command {other}");
            std::process::exit(2)
        }
    }
}
