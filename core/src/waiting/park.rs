//! What a busy acquisition waits for, decided from what it found: whose death to watch,
//! how long its fallback wait is, and whether the lock changed between its look and its
//! registration (then it looks once more). The binding only asks.

use super::*;
use crate::host::{locality_of, Locality};
use crate::kernel_lock::HolderSlot;
use crate::lockfile_io::{observe, Observed};
use crate::process_probe::start_time_of;
use crate::protocol::Busy;

/// Who to watch for the holder's death. A holder in our PID namespace whose recorded start
/// time matches its pid's is that process: a pidfd (no thread) reports its exit, by which
/// time the kernel has dropped its locks. Otherwise a holder of this package on this kernel
/// is watched through its kernel byte (a helper thread blocks on it); a holder of the
/// original module is watched by pid. `locks_dir`: the lock's directory; `injected`: the
/// acquisition judges by callbacks of its own (then no pid of the original is watched).
pub fn holder_watch(locks_dir: &Path, busy: &Busy, injected: bool) -> Option<HolderWatch> {
    // Stuck behind a stopped process's mutex, the holder's death changes nothing (and a
    // dead one's would wake us at once, again and again).
    if busy.mutex_stuck {
        return None;
    }
    let holder = busy.holder.as_ref()?;
    let locality = locality_of(holder);
    let provable_pid = holder.probeable_pid().filter(|pid| {
        let recorded = holder.start_time().and_then(|st| st.as_f64());
        // Where start times are not the original's (macOS, Windows), this package's
        // `procStart` proves the pid the same way.
        let proven = match (recorded, holder.process_start()) {
            (Some(_), _) => start_time_of(&pid.to_string()) == recorded,
            (None, Some(started)) => crate::sys::process_start(*pid) == Some(started),
            (None, None) => false,
        };
        // Where exits cannot be watched, the byte's helper thread is the prompt way.
        crate::sys::PID_HANDLES && locality == Locality::SamePidNamespace && proven
    });
    match (holder.owner_lock(), locality) {
        (_, Locality::Elsewhere) => None,
        (Some(offset), _) if HolderSlot::is_valid(offset) => {
            match (provable_pid, holder.owner_file()) {
                (Some(pid), _) => Some(HolderWatch::Pid(pid)),
                // An owner file named unreadably: no byte of any file proves anything.
                (None, Some(None)) => None,
                (None, named) => Some(HolderWatch::KernelByte {
                    owner_file: locks_dir.join(OWNER_FILE_NAME),
                    offset,
                    owner_id: named.flatten(),
                }),
            }
        }
        (None, Locality::SamePidNamespace) if !injected => {
            holder.probeable_pid().map(HolderWatch::Pid)
        }
        _ => None,
    }
}

/// The fallback wait of a busy acquisition: `poll` (`pollMs`), or less for an unreadable
/// file only just written, which no event reports being written
/// ([`UNREADABLE_RELOOK`]).
pub fn fallback_wait(busy: &Busy, poll: Duration) -> Duration {
    if busy.holder.is_some() || busy.mutex_stuck {
        poll
    } else {
        poll.min(UNREADABLE_RELOOK)
    }
}

/// Whether the lock is still as the acquisition found it (`waited_on`: the record it found,
/// none for an unreadable entry): a release between its look and its registration raised no
/// event it could see, so when this is `false` it should look once more (see [`nudge`]).
pub fn still_as_found(lock_path: &Path, waited_on: Option<&ParsedRecord>) -> bool {
    match (observe(lock_path), waited_on) {
        (
            Ok(Observed::File {
                record: Some(r), ..
            }),
            Some(holder),
        ) => r == *holder,
        (Ok(Observed::File { record: None, .. } | Observed::NotAFile { .. }), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
