//! What macOS says about processes and this host.

use super::unix::{ids_differ, urandom};

/// No `/proc` here: no state or start time is read for a pid (the original's
/// `defaultStartTimeResolver` gives `undefined` on macOS too); liveness goes by
/// `kill(pid, 0)` and the heartbeat.
pub fn proc_stat(_pid: &str) -> Option<(char, f64)> {
    None
}

pub fn state_is_dead(_state: char) -> bool {
    false
}

/// The kernel's boot session UUID (`kern.bootsessionuuid`): equal only within one boot.
pub fn boot_id() -> Option<String> {
    let mut buf = [0u8; 64];
    let mut len = buf.len();
    let name = c"kern.bootsessionuuid";
    // SAFETY: a NUL-terminated name, a buffer and its length, all alive for the call.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let text = buf.get(..len)?;
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let id = String::from_utf8_lossy(&text[..end]).trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// macOS has no PID namespaces: every process of a boot shares the one.
pub fn pid_namespace() -> Option<String> {
    None
}

/// Whether the process runs with other real than effective ids (Node's safeGetenv checks
/// the same off Linux).
pub fn secure_exec() -> bool {
    ids_differ()
}

/// Fills `buf` from the kernel's random source (`getentropy`, 256 bytes at most a call).
pub fn random_bytes(buf: &mut [u8]) -> bool {
    // SAFETY: buf is valid for its length.
    (buf.len() <= 256 && unsafe { libc::getentropy(buf.as_mut_ptr().cast(), buf.len()) } == 0)
        || urandom(buf)
}
