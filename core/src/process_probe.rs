//! What the kernel says about a pid: its start time (the original's
//! `defaultStartTimeResolver`, number for number) and whether it is alive.

use crate::sys;

struct ProcStat {
    state: char,
    /// `Number(field 22)`, not yet scaled.
    start_ticks: f64,
}

/// `/proc/<pid>/stat` where there is one.
fn read_proc_stat(pid: &str) -> Option<ProcStat> {
    let (state, start_ticks) = sys::proc_stat(pid)?;
    Some(ProcStat { state, start_ticks })
}

/// This process's pid, read once: getpid is a syscall (glibc does not cache it), and a
/// Node.js process never forks without exec'ing.
pub fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The original's `defaultStartTimeResolver`: field 22 (`starttime`, in clock ticks) of
/// `/proc/<pid>/stat`, times 10, floored; `None` when the process or `/proc` is missing.
/// `pid` is the decimal text the original would interpolate into the path.
pub fn start_time_of(pid: &str) -> Option<f64> {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Our own start time cannot change while we run: read it once.
    static OWN: std::sync::OnceLock<(String, Option<f64>)> = std::sync::OnceLock::new();
    let (own_pid, own) = OWN.get_or_init(|| {
        let me = own_pid().to_string();
        let st = read_start_time(&me);
        (me, st)
    });
    if pid == own_pid && own.is_some() {
        return *own;
    }
    read_start_time(pid)
}

fn read_start_time(pid: &str) -> Option<f64> {
    let ticks = read_proc_stat(pid)?.start_ticks;
    ticks.is_finite().then(|| (ticks * 10.0).floor())
}

/// What a pid probe in our own PID namespace can prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    /// Runs (or exists and is not ours to signal: EPERM).
    Alive,
    /// No such process, or a zombie that can hold nothing any more.
    Dead,
}

/// What a pid is, from one look: alive or dead, and its start time (as
/// `defaultStartTimeResolver` gives it) when `/proc` has it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PidProbe {
    pub state: PidState,
    pub start_time: Option<f64>,
}

/// One read of `/proc/<pid>/stat` (zombies count as dead); `kill(pid, 0)` only where
/// `/proc` says nothing.
pub fn probe_pid(pid: i32) -> PidProbe {
    if pid <= 0 {
        return PidProbe {
            state: PidState::Dead,
            start_time: None,
        };
    }
    if let Some(stat) = read_proc_stat(&pid.to_string()) {
        let dead = sys::state_is_dead(stat.state);
        let ticks = stat.start_ticks;
        return PidProbe {
            state: if dead {
                PidState::Dead
            } else {
                PidState::Alive
            },
            start_time: ticks.is_finite().then(|| (ticks * 10.0).floor()),
        };
    }
    let gone = sys::pid_is_gone(pid);
    PidProbe {
        state: if gone {
            PidState::Dead
        } else {
            PidState::Alive
        },
        start_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "start times come from /proc")]
    fn own_start_time_is_ticks_times_ten() {
        let me = std::process::id().to_string();
        let st = start_time_of(&me).expect("our own /proc/<pid>/stat");
        assert!(st > 0.0 && st.fract() == 0.0 && st % 10.0 == 0.0, "{st}");
        // Stable across calls: the identity of one process lifetime.
        assert_eq!(start_time_of(&me), Some(st));
    }

    #[test]
    fn start_time_is_none_for_missing_or_odd_pids() {
        assert_eq!(start_time_of("999999999"), None);
        assert_eq!(start_time_of("self"), None);
        assert_eq!(start_time_of(""), None);
        assert_eq!(start_time_of("1.5"), None);
    }

    #[test]
    fn one_probe_gives_state_and_start_time() {
        let me = std::process::id();
        let probe = probe_pid(me as i32);
        assert_eq!(probe.state, PidState::Alive);
        assert_eq!(probe.start_time, start_time_of(&me.to_string()));
        assert_eq!(probe_pid(999_999_999).state, PidState::Dead);
        assert_eq!(probe_pid(999_999_999).start_time, None);
    }

    #[test]
    #[cfg_attr(windows, ignore = "spawns the Unix `true`")]
    fn pid_state_tells_the_living_from_the_dead() {
        assert_eq!(probe_pid(std::process::id() as i32).state, PidState::Alive);
        assert_eq!(probe_pid(0).state, PidState::Dead);
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        // Before it is reaped the child is a zombie: dead for our purposes.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(probe_pid(pid).state, PidState::Dead);
        let _ = child.wait();
        assert_eq!(probe_pid(pid).state, PidState::Dead);
    }
}
