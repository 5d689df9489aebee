//! The line: this process's acquisitions of each lock path, in arrival order.

use super::*;

/// This process's acquisitions in line for each lock path, by arrival order: from when one
/// first waits until it settles (parked, or woken and about to look again). Only the first
/// in line claims; a later one, or a new acquisition while any is in line, waits behind it.
/// So within a process a lock goes to its waiters in arrival order, even when the holder
/// releases and asks for it again at once (otherwise that holder, already running, would
/// usually win the race against a waiter that still needs waking, again and again).
static LINE: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());
/// How many are in [`LINE`]: an uncontended acquisition checks this alone.
static IN_LINE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(super) fn line() -> MutexGuard<'static, Vec<(PathBuf, u64)>> {
    LINE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether no acquisition of this process is in line for `lock_path`: a new one may claim.
pub fn line_is_empty(lock_path: &Path) -> bool {
    IN_LINE.load(std::sync::atomic::Ordering::Acquire) == 0
        || !line()
            .iter()
            .any(|(p, _)| p.as_os_str() == lock_path.as_os_str())
}

/// A waiting acquisition's place in line for its lock path; left when dropped.
#[derive(Debug)]
pub struct LinePlace {
    path: PathBuf,
    order: u64,
    left: bool,
}

impl LinePlace {
    /// Joins the line of `lock_path` with this arrival `order` (as in [`WaitSpec::order`]).
    pub fn join(lock_path: &Path, order: u64) -> LinePlace {
        let mut line = line();
        line.push((lock_path.to_path_buf(), order));
        IN_LINE.store(line.len(), std::sync::atomic::Ordering::Release);
        LinePlace {
            path: lock_path.to_path_buf(),
            order,
            left: false,
        }
    }

    /// Its arrival order (as in [`WaitSpec::order`]).
    pub fn order(&self) -> u64 {
        self.order
    }

    /// Whether no acquisition that arrived earlier is in line for the same lock path.
    pub fn is_first(&self) -> bool {
        !line()
            .iter()
            .any(|(p, o)| *o < self.order && p.as_os_str() == self.path.as_os_str())
    }

    /// Leaves the line (once; dropping leaves it too).
    pub fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let mut line = line();
        if let Some(at) = line
            .iter()
            .position(|(p, o)| *o == self.order && p.as_os_str() == self.path.as_os_str())
        {
            line.swap_remove(at);
        }
        IN_LINE.store(line.len(), std::sync::atomic::Ordering::Release);
    }
}

impl Drop for LinePlace {
    fn drop(&mut self) {
        self.leave();
    }
}
