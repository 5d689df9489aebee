//! The repo-root walk: from `realpath(absCwd)` up to the first folder with a project marker,
//! stopping at the home and temp dirs, then the crew root under it. Symlink-free folders
//! are proven so by one open through the platform layer where it can.

use super::*;

/// findRepoRoot as above (None = no repo root).
///
/// `abs_cwd` must be absolute and normalised (what [`resolve_lexical`] returns).
pub fn find_repo_root(abs_cwd: &Path, ctx: &PathContext) -> Result<Option<PathBuf>, LockError> {
    Ok(walk_to_repo_root(abs_cwd, ctx)?.root.map(|(root, _)| root))
}

/// What one walk learnt, for `crew_root_of` to reuse within the same call.
pub(super) struct Walk {
    /// The repo root, and the index in [`MARKERS`] of the marker that made it one (every
    /// marker before it was seen absent there).
    root: Option<(PathBuf, usize)>,
    /// Where the walk started: realpath(absCwd), or absCwd when that does not exist.
    start: PathBuf,
    /// `start` is a realpath; then so is every folder the walk visits.
    canonical: bool,
    /// A handle on `start` when the symlink-free check opened one; closed with the walk.
    start_fd: Option<OwnedFd>,
    /// `start` was searched for markers and held none.
    start_bare: bool,
}

impl Walk {
    /// `path` for lookups, with the handle on it when it is the start folder.
    fn dir<'a>(&'a self, path: &'a Path) -> Dir<'a> {
        dir_at(path, &self.start, self.start_fd.as_ref())
    }
}

pub(super) fn walk_to_repo_root(abs_cwd: &Path, ctx: &PathContext) -> Result<Walk, LockError> {
    let raw = abs_cwd.as_os_str().as_bytes();
    if raw.contains(&0) {
        // Node's fs.realpathSync rejects NUL before any syscall, with a TypeError.
        return Err(LockError::Type(format!(
            "The argument 'path' must be a string, Uint8Array, or URL without null bytes. Received {}",
            node_inspect_string(&String::from_utf8_lossy(raw))
        )));
    }
    let (start, start_fd, canonical) = match realpath(abs_cwd) {
        Ok((real, fd)) => (real, fd, true),
        // A cwd that does not exist yet is walked lexically; its existing parents still count.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => (abs_cwd.to_path_buf(), None, false),
        Err(e) => return Err(LockError::io(&e, "realpath", abs_cwd)),
    };
    // Realpath'd so a symlinked home or temp dir still stops the walk; left lexical if that
    // fails. Resolved on first use, those that cost nothing compared first.
    let mut bounds = [
        Boundary::new(&ctx.home, &start, canonical),
        Boundary::new(&ctx.tmp, &start, canonical),
    ];
    if bounds[0].real.is_none() {
        bounds.swap(0, 1);
    }
    // String equality, as in JS: no component-wise comparison.
    let mut is_boundary = |dir: &Path| bounds.iter_mut().any(|b| b.real() == dir.as_os_str());
    let fd = start_fd.as_ref();
    let mut start_bare = false;
    let mut found = None;

    let root = Path::new("/");
    let mut current: &Path = &start;
    let mut stopped = false;
    while current.as_os_str() != root.as_os_str() {
        if is_boundary(current) {
            stopped = true;
            break;
        }
        if let Some(marker) = first_marker(dir_at(current, &start, fd)) {
            found = Some((current.to_path_buf(), marker));
            break;
        }
        start_bare |= current.as_os_str() == start.as_os_str();
        // Lexical dirname; the path is normalised, so this is exactly Node's path.dirname.
        match current.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => current = parent,
            _ => break,
        }
    }
    if found.is_none() && !stopped && !is_boundary(root) {
        match first_marker(dir_at(root, &start, fd)) {
            Some(marker) => found = Some((root.to_path_buf(), marker)),
            None => start_bare |= start.as_os_str() == root.as_os_str(),
        }
    }
    Ok(Walk {
        root: found,
        start,
        canonical,
        start_fd,
        start_bare,
    })
}

/// The home or temp dir as the walk compares it.
pub(super) struct Boundary<'a> {
    lexical: &'a Path,
    /// Its realpath (or `lexical` when that fails), once known.
    real: Option<PathBuf>,
}

impl<'a> Boundary<'a> {
    fn new(lexical: &'a Path, start: &Path, canonical: bool) -> Self {
        // A folder on the way to a realpath (the realpath itself included) is its own
        // realpath: it exists and no symlink is on its way.
        let free = canonical && is_ancestor_or_self(lexical, start);
        Boundary {
            lexical,
            real: free.then(|| lexical.to_path_buf()),
        }
    }

    fn real(&mut self) -> &OsStr {
        let lexical = self.lexical;
        self.real
            .get_or_insert_with(|| {
                realpath(lexical).map_or_else(|_| lexical.to_path_buf(), |r| r.0)
            })
            .as_os_str()
    }
}

/// Whether `dir` is `path` or one of its folders, component-wise; `path` must be normalised.
pub(super) fn is_ancestor_or_self(dir: &Path, path: &Path) -> bool {
    let (dir, path) = (dir.as_os_str().as_bytes(), path.as_os_str().as_bytes());
    dir.first() == Some(&b'/')
        && path.starts_with(dir)
        && (dir == b"/" || path.len() == dir.len() || path[dir.len()] == b'/')
}

/// realpath(3), with a handle on the result when it was checked symlink-free by opening it.
pub(super) fn realpath(path: &Path) -> std::io::Result<(PathBuf, Option<OwnedFd>)> {
    match open_if_symlink_free(path) {
        Some(fd) => Ok((path.to_path_buf(), Some(fd))),
        // A symlink on the way, no openat2, a missing entry, anything: libc decides, so the
        // result and the error are realpath's own.
        None => fs::canonicalize(path).map(|real| (real, None)),
    }
}

/// An O_PATH handle on `path` when it is absolute, normalised, exists and has no symlink
/// in any component: then it is its own realpath, found in one openat2 (plus a close)
/// instead of one readlink per component.
pub(super) fn open_if_symlink_free(path: &Path) -> Option<OwnedFd> {
    let raw = path.as_os_str().as_bytes();
    // Below three components realpath's one readlink each costs less than open + close.
    let components = raw.iter().filter(|&&b| b == b'/').count();
    if components < 3 {
        return None;
    }
    open_symlink_free(path)
}

/// `open_if_symlink_free` at any depth.
pub(super) fn open_symlink_free(path: &Path) -> Option<OwnedFd> {
    open_without_symlinks(path, sys::O_PATH, 0).ok()
}

/// Opens an absolute, normalised `path` with `flags` (plus O_CLOEXEC; `mode` if it creates)
/// only if no component of it, the last included, is a symlink: ELOOP if one is, ENOENT if
/// one is missing... EINVAL for a path that is not normalised (it would differ from its
/// realpath). Unsupported where the platform cannot refuse every symlink in one open:
/// callers then take their full way.
pub fn open_without_symlinks(
    path: &Path,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    // `.`, `..` or `//` would make the path differ from its realpath.
    if !is_normal_rooted(path.as_os_str().as_bytes()) {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    sys::open_without_symlinks(path, flags, mode)
}

/// A folder to look names up in: its path, and a handle on it when the walk has one.
#[derive(Clone, Copy)]
pub(super) struct Dir<'a> {
    path: &'a Path,
    fd: Option<BorrowedFd<'a>>,
}

pub(super) fn dir_at<'a>(path: &'a Path, start: &Path, start_fd: Option<&'a OwnedFd>) -> Dir<'a> {
    let fd = start_fd
        .filter(|_| path.as_os_str() == start.as_os_str())
        .map(|fd| fd.as_fd());
    Dir { path, fd }
}

/// stat (`follow`) or lstat of `dir/name`, answering whether it is a symlink. Through the
/// handle when there is one: the same answer, with a shorter lookup in the kernel.
pub(super) fn stat_in(dir: Dir, name: &str, follow: bool) -> std::io::Result<bool> {
    if let Some(fd) = dir.fd.filter(|_| !name.contains('\0')) {
        return sys::unix::is_symlink_at(fd, name, follow);
    }
    let path = node_join(dir.path, name);
    let meta = if follow {
        fs::metadata(&path)
    } else {
        fs::symlink_metadata(&path)
    };
    meta.map(|m| m.file_type().is_symlink())
}

/// crewRoot for a repo root.
pub fn crew_root(repo_root: &Path) -> Result<PathBuf, LockError> {
    let dir = Dir {
        path: repo_root,
        fd: None,
    };
    crew_root_of(dir, false, None)
}

/// `crew_root`; `canonical` says the folder is already a realpath, and `first_marker` is
/// what the walk saw of its markers (see [`Walk::root`]), if it searched it.
pub(super) fn crew_root_of(
    dir: Dir,
    canonical: bool,
    first_marker: Option<usize>,
) -> Result<PathBuf, LockError> {
    let known = |name: &str| {
        let index = MARKERS.iter().position(|m| *m == name)?;
        first_marker.and_then(|first| match first.cmp(&index) {
            std::cmp::Ordering::Greater => Some(false),
            std::cmp::Ordering::Equal => Some(true),
            std::cmp::Ordering::Less => None,
        })
    };
    let crew = node_join(dir.path, ".crew");
    if let Some(real) = realpath_if_exists(dir, ".crew", canonical, known(".crew"))? {
        return Ok(real);
    }
    // Legacy layout: an existing `.pi/` hosts the crew state under `teams/`.
    if let Some(real) = realpath_if_exists(dir, ".pi", canonical, known(".pi"))? {
        return Ok(node_join(&real, "teams"));
    }
    Ok(crew)
}

/// The realpath of `dir/name` if it exists (following symlinks); `known` is its existence
/// when the walk already saw it.
pub(super) fn realpath_if_exists(
    dir: Dir,
    name: &str,
    canonical: bool,
    known: Option<bool>,
) -> Result<Option<PathBuf>, LockError> {
    if known == Some(false) {
        return Ok(None);
    }
    let path = node_join(dir.path, name);
    if canonical {
        match stat_in(dir, name, false) {
            // In a realpath'd folder anything but a symlink is its own realpath.
            Ok(false) => return Ok(Some(path)),
            // No entry at all: following symlinks cannot find one either.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            // A symlink, or an lstat failure (EACCES, ENOTDIR...): as if unknown.
            _ => {}
        }
    }
    if known.is_none() && stat_in(dir, name, true).is_err() {
        return Ok(None);
    }
    // Existence was just seen, so a failure here is a race worth reporting.
    fs::canonicalize(&path)
        .map(Some)
        .map_err(|e| LockError::io(&e, "realpath", &path))
}

/// pi-crew's usual case in one openat2 and a close: `absCwd/.crew` opened with no symlink
/// in any component. Then absCwd is its own realpath and holds a marker, so the walk stops
/// there at once: it is the repo root, or it is home, tmp or `/` and absCwd hosts `.crew`
/// anyway. The same folder either way, so neither home, tmp nor another marker is looked
/// at; and `.crew`, no symlink, is its own realpath. Anything else (no `.crew`, a symlink,
/// an error) takes the full walk, which reports errors as Node would.
pub(super) fn crew_in_symlink_free_cwd(abs_cwd: &Path) -> bool {
    // The handle is closed at once: only the success matters.
    open_symlink_free(&node_join(abs_cwd, ".crew")).is_some()
}

pub(super) fn crew_root_by_walking(
    abs_cwd: &Path,
    ctx: &PathContext,
) -> Result<PathBuf, LockError> {
    let walk = walk_to_repo_root(abs_cwd, ctx)?;
    let crew = match &walk.root {
        Some((root, marker)) => crew_root_of(walk.dir(root), walk.canonical, Some(*marker))?,
        // Without a repo root the lexical cwd itself hosts `.crew`. What the walk learnt of
        // its start folder holds there only when that is the same path.
        None => {
            let same = walk.start.as_os_str() == abs_cwd.as_os_str();
            crew_root_of(
                walk.dir(abs_cwd),
                walk.canonical && same,
                (same && walk.start_bare).then_some(MARKERS.len()),
            )?
        }
    };
    Ok(crew)
}

/// The index of the first marker present in `dir` (fs.existsSync: any stat error, ENOENT,
/// EACCES, ELOOP, a dangling link..., means absent), one stat per marker.
pub(super) fn first_marker(dir: Dir) -> Option<usize> {
    MARKERS.iter().position(|m| stat_in(dir, m, true).is_ok())
}
