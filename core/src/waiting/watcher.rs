//! The watcher: one thread per process waits on the platform layer's [`sys::Notifier`]
//! (directory changes, holders' exits, pokes) and on helper threads blocked on holders'
//! kernel bytes, and wakes the waiters those events concern, in turn.

use super::*;

pub(super) struct DirWatch {
    /// `None` once the watch is known dead (the directory was deleted or moved away): the
    /// watcher then adds it again as soon as the directory is back.
    watch: Option<Watch>,
    users: usize,
    /// Until when to keep checking that the path still names the watched directory: its
    /// `.owners` was deleted, maybe by an `rm -rf` not yet at the directory itself.
    suspect_until: Option<Instant>,
}

/// How long after its `.owners` is deleted a watched directory is checked for deletion.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
pub(super) struct Watch {
    wd: i32,
    /// The watched directory's device and inode. A directory deleted while files in it are
    /// still open (ours: spares, owner files) stays alive unnamed, and the kernel reports
    /// its deletion only when they close; so whether the path still names it is checked
    /// when it matters.
    dir: (u64, u64),
}

pub(super) fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    sys::path_key(dir, true).ok().map(|(id, _)| id)
}

/// How often a dropped directory watch that waiters still count on is tried again.
const REWATCH_EVERY: Duration = Duration::from_millis(10);

pub(super) struct Service {
    state: Mutex<State>,
    notifier: sys::Notifier,
}

pub(super) fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| Service {
        state: Mutex::new(State::default()),
        notifier: sys::Notifier::open(),
    })
}

impl Service {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn start_thread(&'static self, st: &mut State) -> std::io::Result<()> {
        if !st.thread_started {
            std::thread::Builder::new()
                .name("workspace-lock-waiter".into())
                .spawn(move || self.run())?;
            st.thread_started = true;
        }
        Ok(())
    }

    pub(super) fn poke(&self) {
        self.notifier.poke();
    }

    pub(super) fn watch_dir(&self, st: &mut State, dir: &Path) {
        if let Some(w) = st.dirs.get_mut(dir) {
            w.users += 1;
            // A new wait is when a replaced directory matters: check it is still the one.
            if w.watch
                .is_some_and(|watch| dir_identity(dir) != Some(watch.dir))
            {
                self.forget_watch(w);
            }
            if w.watch.is_none() {
                w.watch = self.add_watch(dir);
            }
            return;
        }
        if let Some(watch) = self.add_watch(dir) {
            st.dirs.insert(
                dir.to_path_buf(),
                DirWatch {
                    watch: Some(watch),
                    users: 1,
                    suspect_until: None,
                },
            );
        }
    }

    pub(super) fn add_watch(&self, dir: &Path) -> Option<Watch> {
        let wd = self.notifier.add_watch(dir)?;
        match dir_identity(dir) {
            Some(id) => Some(Watch { wd, dir: id }),
            None => {
                self.rm_watch(wd);
                None
            }
        }
    }

    pub(super) fn rm_watch(&self, wd: i32) {
        self.notifier.rm_watch(wd);
    }

    pub(super) fn forget_watch(&self, w: &mut DirWatch) {
        if let Some(watch) = w.watch.take() {
            self.rm_watch(watch.wd);
        }
    }

    /// Forgets the watches that died: those the kernel reported gone (`whole`), and those
    /// whose path now names another directory or none, checked while suspect (`suspect`:
    /// wds whose `.owners` was just deleted). Keeps their users. Returns the directories
    /// concerned: their waiters may have missed events.
    pub(super) fn drop_dead_watches(
        &self,
        st: &mut State,
        whole: &[i32],
        suspect: &[i32],
        now: Instant,
    ) -> Vec<PathBuf> {
        let mut dead = Vec::new();
        for (dir, w) in st.dirs.iter_mut() {
            let Some(watch) = w.watch else { continue };
            if suspect.contains(&watch.wd) {
                w.suspect_until = now.checked_add(SUSPECT_FOR);
            }
            if w.suspect_until.is_some_and(|until| until <= now) {
                w.suspect_until = None;
            }
            let gone = whole.contains(&watch.wd)
                || (w.suspect_until.is_some() && dir_identity(dir) != Some(watch.dir));
            if gone {
                self.forget_watch(w);
                w.suspect_until = None;
                dead.push(dir.clone());
            }
        }
        dead
    }

    /// Adds again the dropped watches of directories that exist again; returns those
    /// directories (their waiters may have missed events meanwhile).
    pub(super) fn rewatch(&self, st: &mut State) -> Vec<PathBuf> {
        let mut added = Vec::new();
        for (dir, w) in st.dirs.iter_mut() {
            if w.watch.is_none() {
                w.watch = self.add_watch(dir);
                if w.watch.is_some() {
                    added.push(dir.clone());
                }
            }
        }
        added
    }

    pub(super) fn unwatch_dir(&self, st: &mut State, dir: &Path) {
        let Some(w) = st.dirs.get_mut(dir) else {
            return;
        };
        w.users -= 1;
        if w.users == 0 {
            let watch = w.watch;
            st.dirs.remove(dir);
            // Another path may share this wd (a hard-linked or re-added directory).
            if let Some(watch) = watch.filter(|watch| {
                !st.dirs
                    .values()
                    .any(|d| d.watch.is_some_and(|w| w.wd == watch.wd))
            }) {
                self.rm_watch(watch.wd);
            }
        }
    }

    pub(super) fn watch_holder(&'static self, st: &mut State, holder: &HolderWatch) {
        match holder {
            HolderWatch::Pid(pid) => {
                if st.pidfds.contains_key(pid) {
                    return;
                }
                match self.notifier.watch_pid(*pid) {
                    PidHandle::Watching(fd) => {
                        st.pidfds.insert(*pid, fd);
                    }
                    // Already gone between the judgement and now: that is its exit.
                    PidHandle::Gone => st.exited_pids.push(*pid),
                    // No exit handles here (old kernel): the pollMs fallback covers it.
                    PidHandle::Unsupported => {}
                }
            }
            HolderWatch::KernelByte {
                owner_file,
                offset,
                owner_id,
            } => {
                let key = (owner_file.clone(), *offset);
                let owner_id = *owner_id;
                if st.byte_watchers.contains(&key) {
                    return;
                }
                let started = std::thread::Builder::new()
                    .name("workspace-lock-holder-watch".into())
                    .stack_size(64 * 1024)
                    .spawn({
                        let key = key.clone();
                        move || {
                            let freed =
                                crate::kernel_lock::wait_until_free(&key.0, key.1, owner_id);
                            let mut st = self.lock();
                            st.byte_watchers.remove(&key);
                            // An unwatchable byte wakes nobody: the directory's events and
                            // pollMs still do.
                            if freed {
                                st.fired_bytes.push(key);
                                drop(st);
                                self.poke();
                            }
                        }
                    })
                    .is_ok();
                if started {
                    st.byte_watchers.insert(key);
                }
            }
        }
    }

    pub(super) fn run(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let events = {
                let st = self.lock();
                let next = st
                    .waiters
                    .values()
                    .map(|w| w.paused_until.map_or(w.deadline, |end| w.deadline.min(end)))
                    .min();
                // A dropped watch is tried again, and a suspect one checked, every REWATCH_EVERY.
                let rewatch = st
                    .dirs
                    .values()
                    .any(|d| d.watch.is_none() || d.suspect_until.is_some())
                    .then(|| Instant::now() + REWATCH_EVERY);
                let heads = st
                    .woken_heads
                    .values()
                    .map(|(_, at)| *at + HEAD_PATIENCE)
                    .min();
                let timeout = next
                    .into_iter()
                    .chain(rewatch)
                    .chain(heads)
                    .min()
                    .map_or(-1, |at| {
                        let ms = at
                            .saturating_duration_since(Instant::now())
                            .as_micros()
                            .div_ceil(1000);
                        ms.min(i32::MAX as u128) as i32
                    });
                // Only this thread closes pid handles (below), so theirs stay valid while
                // it waits without the state's lock.
                let pids: Vec<(i32, sys::RawPidFd)> = st
                    .pidfds
                    .iter()
                    .map(|(pid, fd)| (*pid, sys::raw_pid_fd(fd)))
                    .collect();
                drop(st);
                self.notifier.wait(&pids, timeout, &mut buf)
            };
            let mut fired: Vec<(WaitId, WakeReason)> = Vec::new();
            let mut expired: Vec<WaitId> = Vec::new();
            let changed_entries = events.entries;
            let dirs_changed = events.dirs_changed;
            let whole = events.whole;
            let mut st = self.lock();
            // Directories whose every entry may have changed unseen: those whose watch the
            // kernel dropped (deleted, moved away), those watched again after that, and all
            // of them when the event queue overflowed.
            let overflowed = events.overflowed;
            // `.owners` deleted: the whole directory may have gone (`rm -rf`).
            let suspect: Vec<i32> = changed_entries
                .iter()
                .filter(|(_, name)| name.as_encoded_bytes() == OWNER_FILE_NAME.as_bytes())
                .map(|(wd, _)| *wd)
                .collect();
            let mut whole_dirs: HashSet<PathBuf> = self
                .drop_dead_watches(&mut st, &whole, &suspect, Instant::now())
                .into_iter()
                .collect();
            whole_dirs.extend(self.rewatch(&mut st));
            let mut exited: Vec<i32> = events.exited;
            exited.append(&mut st.exited_pids);
            for pid in &exited {
                st.pidfds.remove(pid);
            }
            let bytes = std::mem::take(&mut st.fired_bytes);
            let now = Instant::now();
            // Per lock path, an event wakes only its earliest waiter (the next in line);
            // deadlines wake each waiter on its own.
            let mut turns: HashMap<(&Path, &OsString), PathTurn> = HashMap::new();
            let mut pauses_over: Vec<WaitId> = Vec::new();
            for (id, w) in &st.waiters {
                let rank = (w.order, *id);
                let turn = turns.entry((w.dir.as_path(), &w.name)).or_insert(PathTurn {
                    first: rank,
                    first_paused: !w.listening(),
                    woken: None,
                });
                if rank < turn.first {
                    turn.first = rank;
                    turn.first_paused = !w.listening();
                }
                let changed = match w.paused_until {
                    None => {
                        let wd = st.dirs.get(&w.dir).and_then(|d| d.watch).map(|w| w.wd);
                        overflowed
                            || whole_dirs.contains(&w.dir)
                            || wd.is_some_and(|wd| {
                                changed_entries
                                    .iter()
                                    .any(|(e, n)| *e == wd && *n == w.name)
                                    || dirs_changed.contains(&wd)
                            })
                    }
                    // A pause that ended: look again, as after a change.
                    Some(end) if end <= now => {
                        pauses_over.push(*id);
                        true
                    }
                    Some(_) => false,
                };
                let holder_gone = match &w.holder {
                    Some(HolderWatch::Pid(pid)) => exited.contains(pid),
                    Some(HolderWatch::KernelByte {
                        owner_file, offset, ..
                    }) => bytes.iter().any(|(f, o)| f == owner_file && o == offset),
                    None => false,
                };
                let reason = if changed {
                    WakeReason::Changed
                } else if holder_gone {
                    WakeReason::HolderGone
                } else {
                    if w.deadline <= now {
                        expired.push(*id);
                    }
                    continue;
                };
                if turn.woken.is_none_or(|(best, _)| rank < best) {
                    turn.woken = Some((rank, reason));
                }
            }
            for turn in turns.into_values() {
                let Some(((_, id), reason)) = turn.woken else {
                    continue;
                };
                // While the earliest waiter pauses, those behind it in this process are not
                // woken for it: it looks first, when its pause ends.
                if turn.first_paused && turn.first.1 != id {
                    continue;
                }
                if !fired.iter().any(|(f, _)| *f == id) {
                    fired.push((id, reason));
                }
            }
            st.pass_on_stuck_turns(&mut fired, now);
            st.pass_on_looks(&mut fired, expired, now);
            // A waiter whose pause ended behind a paused one listens again, and waits its turn.
            for id in pauses_over {
                if fired.iter().any(|(f, _)| *f == id) {
                    continue;
                }
                if let Some(w) = st.waiters.get_mut(&id) {
                    w.paused_until = None;
                    let dir = w.dir.clone();
                    self.watch_dir(&mut st, &dir);
                }
            }
            // Oldest first: within this process waiters are served in arrival order.
            fired.sort_unstable_by_key(|(id, _)| {
                st.waiters
                    .get(id)
                    .map_or((u64::MAX, *id), |w| (w.order, *id))
            });
            let mut callbacks = Vec::with_capacity(fired.len());
            for (id, reason) in fired {
                if let Some(w) = st.waiters.remove(&id) {
                    if w.listening() {
                        self.unwatch_dir(&mut st, &w.dir);
                    }
                    st.note_woken(&w, reason, now);
                    callbacks.push((w.callback, reason));
                }
            }
            // Pidfds nobody waits on any more are closed.
            let wanted: HashSet<i32> = st
                .waiters
                .values()
                .filter_map(|w| match w.holder {
                    Some(HolderWatch::Pid(p)) => Some(p),
                    _ => None,
                })
                .collect();
            st.pidfds.retain(|pid, _| wanted.contains(pid));
            st.forget_unwaited_looks();
            drop(st);
            for (callback, reason) in callbacks {
                callback(reason);
            }
        }
    }
}
