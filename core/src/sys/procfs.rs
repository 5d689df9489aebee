//! What Linux's `/proc` and auxiliary vector say about processes and this host.

use super::unix::{ids_differ, urandom};
use std::fs;

/// The state letter and start time (`starttime`, field 22, in clock ticks) of a pid, from
/// `/proc/<pid>/stat`; `None` when the process or `/proc` is missing.
pub fn proc_stat(pid: &str) -> Option<(char, f64)> {
    // One read: /proc reports size 0, so a growing read_to_end would take several.
    let mut buf = [0u8; 1024];
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let len = std::io::Read::read(&mut file, &mut buf).ok()?;
    let stat = String::from_utf8_lossy(&buf[..len]);
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse::<f64>().ok()?;
    Some((state, start_ticks))
}

/// When a process started, as a number that changes when its pid is reused: here its
/// `/proc` start time in clock ticks.
pub fn process_start(pid: i32) -> Option<u64> {
    proc_stat(&pid.to_string()).map(|(_, ticks)| ticks as u64)
}

/// Whether a process state letter is that of a process that can hold nothing any more.
pub fn state_is_dead(state: char) -> bool {
    state == 'Z' || state == 'X'
}

/// The kernel's boot id: equal only within one boot of one machine.
pub fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// This process's PID namespace (its inode number), where pids mean what they say.
pub fn pid_namespace() -> Option<String> {
    fs::read_link("/proc/self/ns/pid").ok().and_then(|link| {
        // "pid:[4026531836]" -> "4026531836"
        let text = link.to_string_lossy().into_owned();
        let inner = text.strip_prefix("pid:[")?.strip_suffix(']')?;
        Some(inner.to_string())
    })
}

/// Whether the process runs with elevated credentials (Node's safeGetenv then ignores the
/// environment): other real than effective ids, or AT_SECURE.
pub fn secure_exec() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; 0 means "absent".
    ids_differ() || unsafe { libc::getauxval(libc::AT_SECURE) } != 0
}

/// Fills `buf` from the kernel's random source; `false` if it could not.
pub fn random_bytes(buf: &mut [u8]) -> bool {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    (n >= 0 && n as usize == buf.len()) || urandom(buf)
}
