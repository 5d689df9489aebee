//! Where a workspace's lockfile lives: pi-crew's `workspaceLockPath(cwd)`, byte for byte.
//!
//! `absCwd = path.resolve(cwd)`, hashed with SHA-256; the repo root is found by walking up
//! from `realpath(absCwd)` looking for project markers, stopping at the home and temp dirs;
//! the crew root is `.crew` (or legacy `.pi/teams`) under it; the lock is
//! `crewRoot/state/workspace-locks/<hash>.lock`. Unix paths only. Nothing is cached: markers
//! may appear or vanish between calls.
//!
//! Syscalls dominate the cost, so one call saves what it can without changing any answer: a
//! symlink-free cwd is proven its own realpath by one openat2 (and the folders on its way with
//! it), names in it are looked up through that handle, and what the walk saw of markers is
//! reused for `.crew` and `.pi`. None of it outlives the call.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::LockError;
use crate::sys;

/// Names whose presence (following symlinks) makes a folder a project root, in pi-crew's order.
const MARKERS: [&str; 15] = [
    ".git",
    ".pi",
    ".crew",
    ".hg",
    ".svn",
    ".factory",
    ".omc",
    "package.json",
    "pyproject.toml",
    "Cargo.toml",
    "go.mod",
    "pom.xml",
    "composer.json",
    "build.gradle",
    "build.gradle.kts",
];

/// What `path.resolve`, `os.homedir()` and `os.tmpdir()` give in this process, captured once
/// so tests can inject them.
#[derive(Debug, Clone)]
pub struct PathContext {
    pub process_cwd: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

impl PathContext {
    /// From the real process, for resolving `cwd`: $HOME / passwd, $TMPDIR/$TMP/$TEMP//tmp
    /// (path.resolve()d, not yet realpath'd), and the process's working directory, which is
    /// only read when something (`cwd`, `$HOME`, the temp dir) is relative.
    pub fn for_cwd(cwd: &str) -> Result<PathContext, LockError> {
        let getenv = |name: &str| std::env::var_os(name);
        let home = node_homedir(getenv)?;
        let tmp = node_tmpdir(getenv, secure_exec());
        let relative = |p: &str| !p.starts_with('/');
        let process_cwd = if relative(cwd) || relative(&home) || relative(&tmp) {
            // Node's process.cwd() fails the same way (getcwd of a removed directory); it
            // names the call `uv_cwd` and has no path.
            let dir =
                std::env::current_dir().map_err(|e| LockError::io(&e, "uv_cwd", Path::new("")))?;
            // Node hands JS a UTF-8 decoded string; invalid bytes become U+FFFD there too.
            PathBuf::from(lossy(dir.as_os_str()))
        } else {
            // Not consulted: every path at hand is absolute.
            PathBuf::from("/")
        };
        Ok(PathContext {
            home: resolve_lexical(&process_cwd, &home),
            tmp: resolve_lexical(&process_cwd, &tmp),
            process_cwd,
        })
    }
}

/// Node's posix path.resolve(base, p) where base is absolute.
pub fn resolve_lexical(base: &Path, p: &str) -> PathBuf {
    let joined: Vec<u8> = if p.starts_with('/') {
        // An absolute argument makes Node ignore everything to its left.
        p.as_bytes().to_vec()
    } else {
        let mut v = base.as_os_str().as_bytes().to_vec();
        v.push(b'/');
        v.extend_from_slice(p.as_bytes());
        v
    };
    // `base` is absolute by contract, so the result is rooted even if a caller slips.
    PathBuf::from(OsString::from_vec(normalize(joined, true)))
}

/// Lowercase hex sha256 of the absolute cwd's UTF-8 bytes (use the raw OsStr bytes).
pub fn cwd_hash(abs_cwd: &Path) -> String {
    let mut hex = String::with_capacity(64 + ".lock".len());
    for b in Sha256::digest(abs_cwd.as_os_str().as_bytes()) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// findRepoRoot as above (None = no repo root).
///
/// `abs_cwd` must be absolute and normalised (what [`resolve_lexical`] returns).
pub fn find_repo_root(abs_cwd: &Path, ctx: &PathContext) -> Result<Option<PathBuf>, LockError> {
    Ok(walk_to_repo_root(abs_cwd, ctx)?.root.map(|(root, _)| root))
}

/// What one walk learnt, for `crew_root_of` to reuse within the same call.
struct Walk {
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

fn walk_to_repo_root(abs_cwd: &Path, ctx: &PathContext) -> Result<Walk, LockError> {
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
struct Boundary<'a> {
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
fn is_ancestor_or_self(dir: &Path, path: &Path) -> bool {
    let (dir, path) = (dir.as_os_str().as_bytes(), path.as_os_str().as_bytes());
    dir.first() == Some(&b'/')
        && path.starts_with(dir)
        && (dir == b"/" || path.len() == dir.len() || path[dir.len()] == b'/')
}

/// realpath(3), with a handle on the result when it was checked symlink-free by opening it.
fn realpath(path: &Path) -> std::io::Result<(PathBuf, Option<OwnedFd>)> {
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
fn open_if_symlink_free(path: &Path) -> Option<OwnedFd> {
    let raw = path.as_os_str().as_bytes();
    // Below three components realpath's one readlink each costs less than open + close.
    let components = raw.iter().filter(|&&b| b == b'/').count();
    if components < 3 {
        return None;
    }
    open_symlink_free(path)
}

/// `open_if_symlink_free` at any depth.
fn open_symlink_free(path: &Path) -> Option<OwnedFd> {
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
struct Dir<'a> {
    path: &'a Path,
    fd: Option<BorrowedFd<'a>>,
}

fn dir_at<'a>(path: &'a Path, start: &Path, start_fd: Option<&'a OwnedFd>) -> Dir<'a> {
    let fd = start_fd
        .filter(|_| path.as_os_str() == start.as_os_str())
        .map(|fd| fd.as_fd());
    Dir { path, fd }
}

/// stat (`follow`) or lstat of `dir/name`, answering whether it is a symlink. Through the
/// handle when there is one: the same answer, with a shorter lookup in the kernel.
fn stat_in(dir: Dir, name: &str, follow: bool) -> std::io::Result<bool> {
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
fn crew_root_of(
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
fn realpath_if_exists(
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

/// The whole thing: workspaceLockPath(cwd).
pub fn workspace_lock_path(cwd: &str, ctx: &PathContext) -> Result<PathBuf, LockError> {
    UsualLockPath::of(cwd, ctx).resolved(ctx)
}

fn lock_file_name(abs_cwd: &Path) -> String {
    let mut name = cwd_hash(abs_cwd);
    name.push_str(".lock");
    name
}

/// The lock path of pi-crew's usual layout, `absCwd/.crew/state/workspace-locks/<hash>.lock`,
/// for a caller that would rather open a file there first and learn where the lock lives
/// after. It is the lock path exactly when that lockfile, or anything else in `dir`, opens
/// through [`open_without_symlinks`] (then `.crew` is a folder in a symlink-free cwd: see
/// [`crew_in_symlink_free_cwd`]), or when [`UsualLockPath::crew_is_symlink_free`] says so;
/// else ask [`UsualLockPath::walked`]. [`UsualLockPath::resolved`] does both.
pub struct UsualLockPath {
    abs_cwd: PathBuf,
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl UsualLockPath {
    pub fn of(cwd: &str, ctx: &PathContext) -> UsualLockPath {
        let abs_cwd = resolve_lexical(&ctx.process_cwd, cwd);
        let dir = locks_dir_in(&node_join(&abs_cwd, ".crew"));
        let path = node_join(&dir, &lock_file_name(&abs_cwd));
        UsualLockPath { abs_cwd, dir, path }
    }

    /// Whether `absCwd/.crew` opens symlink-free, making [`UsualLockPath::path`] the lock path.
    pub fn crew_is_symlink_free(&self) -> bool {
        crew_in_symlink_free_cwd(&self.abs_cwd)
    }

    /// [`UsualLockPath::crew_is_symlink_free`], for a caller whose open of [`UsualLockPath::path`]
    /// refusing symlinks has just failed with ENOENT, in one `statx` and no descriptor: that
    /// open met no symlink before the missing component (it would have failed with ELOOP), so
    /// if `.crew` is there and is not a symlink itself, the cwd's components are none either.
    pub fn crew_is_symlink_free_after_enoent(&self) -> bool {
        std::fs::symlink_metadata(node_join(&self.abs_cwd, ".crew"))
            .is_ok_and(|m| !m.file_type().is_symlink())
    }

    /// workspaceLockPath: this path when `.crew` settles it, else the full walk's.
    pub fn resolved(self, ctx: &PathContext) -> Result<PathBuf, LockError> {
        if self.crew_is_symlink_free() {
            Ok(self.path)
        } else {
            self.walked(ctx)
        }
    }

    /// workspaceLockPath by the full walk, the short way being known not to apply.
    pub fn walked(&self, ctx: &PathContext) -> Result<PathBuf, LockError> {
        let dir = locks_dir_in(&crew_root_by_walking(&self.abs_cwd, ctx)?);
        Ok(node_join(&dir, &lock_file_name(&self.abs_cwd)))
    }
}

fn locks_dir_in(crew_root: &Path) -> PathBuf {
    node_join(&node_join(crew_root, "state"), "workspace-locks")
}

/// pi-crew's usual case in one openat2 and a close: `absCwd/.crew` opened with no symlink
/// in any component. Then absCwd is its own realpath and holds a marker, so the walk stops
/// there at once: it is the repo root, or it is home, tmp or `/` and absCwd hosts `.crew`
/// anyway. The same folder either way, so neither home, tmp nor another marker is looked
/// at; and `.crew`, no symlink, is its own realpath. Anything else (no `.crew`, a symlink,
/// an error) takes the full walk, which reports errors as Node would.
fn crew_in_symlink_free_cwd(abs_cwd: &Path) -> bool {
    // The handle is closed at once: only the success matters.
    open_symlink_free(&node_join(abs_cwd, ".crew")).is_some()
}

fn crew_root_by_walking(abs_cwd: &Path, ctx: &PathContext) -> Result<PathBuf, LockError> {
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
fn first_marker(dir: Dir) -> Option<usize> {
    MARKERS.iter().position(|m| stat_in(dir, m, true).is_ok())
}

/// Node's posix path.join(a, b): concatenate with `/`, then normalise.
fn node_join(base: &Path, name: &str) -> PathBuf {
    let mut v = Vec::with_capacity(base.as_os_str().len() + 1 + name.len());
    v.extend_from_slice(base.as_os_str().as_bytes());
    v.push(b'/');
    v.extend_from_slice(name.as_bytes());
    let absolute = v.first() == Some(&b'/');
    let mut out = normalize(v, absolute);
    if !absolute && out.is_empty() {
        out.push(b'.');
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Whether `normalize(path, true)` would return `path` unchanged: rooted, and no empty, `.`
/// or `..` segment (so no `//`, no trailing `/` but in `/` itself).
fn is_normal_rooted(path: &[u8]) -> bool {
    match path {
        [b'/'] => true,
        [b'/', rest @ ..] => rest
            .split(|&b| b == b'/')
            .all(|seg| !matches!(seg, b"" | b"." | b"..")),
        _ => false,
    }
}

/// Node's normalizeString: drop empty and `.` segments, fold `..`. A rooted result stays at
/// `/` on excess `..`; a relative one keeps them. No trailing slash (none of our callers need
/// Node's trailing-slash preservation: they end in a name).
fn normalize(path: Vec<u8>, absolute: bool) -> Vec<u8> {
    // A clean name joined to a clean absolute path (every join on the way to a lock path)
    // needs no rewriting.
    if is_normal_rooted(&path) {
        return path;
    }
    fold_segments(&path, absolute)
}

/// [`normalize`] the long way, segment by segment.
fn fold_segments(path: &[u8], absolute: bool) -> Vec<u8> {
    let rooted = absolute || path.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|last| *last != b"..") {
                    parts.pop();
                } else if !rooted {
                    parts.push(seg);
                }
            }
            _ => parts.push(seg),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    if rooted {
        out.push(b'/');
    }
    for (i, seg) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(seg);
    }
    out
}

/// Node hands env values and passwd fields to JS as UTF-8 decoded strings.
fn lossy(s: &OsStr) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// os.homedir() as libuv computes it: `$HOME` whenever it is set (even empty: libuv only falls
/// back when getenv returns NULL), else the passwd entry of the effective uid.
fn node_homedir(getenv: impl Fn(&str) -> Option<OsString>) -> Result<String, LockError> {
    match getenv("HOME") {
        Some(home) => Ok(lossy(&home)),
        None => sys::unix::passwd_home()
            .map(|dir| lossy(&dir))
            .map_err(|errno| LockError::errno(errno, "uv_os_homedir", Path::new(""))),
    }
}

/// os.tmpdir() on Unix: the first non-empty of TMPDIR, TMP, TEMP (read through Node's
/// safeGetenv, which ignores the environment in a setuid/AT_SECURE process), else `/tmp`;
/// one trailing `/` dropped unless that is the whole string.
fn node_tmpdir(getenv: impl Fn(&str) -> Option<OsString>, secure: bool) -> String {
    let from_env = |name: &str| {
        if secure {
            return None;
        }
        getenv(name).map(|v| lossy(&v)).filter(|v| !v.is_empty())
    };
    let mut dir = from_env("TMPDIR")
        .or_else(|| from_env("TMP"))
        .or_else(|| from_env("TEMP"))
        .unwrap_or_else(|| "/tmp".to_owned());
    if dir.len() > 1 && dir.ends_with('/') {
        dir.pop();
    }
    dir
}

/// Node's safeGetenv refuses the environment when the process runs with elevated
/// credentials. Decided once per process (Node reads AT_SECURE once too): only a process
/// that changes its uid at run time could tell the difference.
fn secure_exec() -> bool {
    static SECURE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SECURE.get_or_init(sys::secure_exec)
}

/// util.inspect of a string, as Node's ERR_INVALID_ARG_VALUE prints it: the first quote kind
/// not in the string, control characters and backslashes escaped, cut at 128 characters.
fn node_inspect_string(s: &str) -> String {
    let quote = ['\'', '"', '`']
        .into_iter()
        // Backticks only when no template-literal `${` could be misread.
        .find(|q| !s.contains(*q) && (*q != '`' || !s.contains("${")))
        .unwrap_or('\'');
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    if out.encode_utf16().count() > 128 {
        // Node slices UTF-16 code units; a cut inside a surrogate pair is replaced here.
        let units: Vec<u16> = out.encode_utf16().take(128).collect();
        out = String::from_utf16_lossy(&units);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IoFailure;
    use crate::test_support::TempDir;
    use std::os::unix::fs::symlink;

    /// A test root (canonical, so the system temp dir being a symlink does not matter) with
    /// `home/` and `tmp/` inside it, injected as the context's home and temp dirs so every
    /// walk stops within the root.
    struct Layout {
        _dir: TempDir,
        root: PathBuf,
        ctx: PathContext,
    }

    impl Layout {
        fn new(label: &str) -> Layout {
            let dir = TempDir::new(&format!("paths-{label}"));
            let root = fs::canonicalize(dir.path()).expect("canonical test root");
            let home = root.join("home");
            let tmp = root.join("tmp");
            fs::create_dir_all(&home).expect("mkdir home");
            fs::create_dir_all(&tmp).expect("mkdir tmp");
            let ctx = PathContext {
                process_cwd: root.clone(),
                home,
                tmp,
            };
            Layout {
                _dir: dir,
                root,
                ctx,
            }
        }

        fn home(&self) -> PathBuf {
            self.ctx.home.clone()
        }

        fn mkdir(&self, rel: &str) -> PathBuf {
            let p = self.root.join(rel);
            fs::create_dir_all(&p).expect("mkdir");
            p
        }

        fn touch(&self, rel: &str) -> PathBuf {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir parent");
            fs::write(&p, b"{}").expect("write");
            p
        }
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 test path")
    }

    /// Byte comparison: Path's own `==` ignores `//` and trailing slashes.
    fn assert_same(actual: &Path, expected: &Path) {
        assert_eq!(actual.as_os_str(), expected.as_os_str());
    }

    fn expected_lock(crew: &Path, abs_cwd: &Path) -> PathBuf {
        let name = format!("{}.lock", cwd_hash(abs_cwd));
        crew.join("state").join("workspace-locks").join(name)
    }

    fn root_of(l: &Layout, cwd: &Path) -> Option<PathBuf> {
        find_repo_root(cwd, &l.ctx).expect("find_repo_root")
    }

    #[test]
    fn resolve_lexical_matches_node_path_resolve() {
        // Expected values printed by Node 20: path.resolve("/base/dir", p).
        let cases = [
            ("", "/base/dir"),
            (".", "/base/dir"),
            ("..", "/base"),
            ("a", "/base/dir/a"),
            ("a/b/", "/base/dir/a/b"),
            ("a//b", "/base/dir/a/b"),
            ("./a/./b", "/base/dir/a/b"),
            ("../x", "/base/x"),
            ("../../../../x", "/x"),
            ("/", "/"),
            ("//", "/"),
            ("///a//b/./c/", "/a/b/c"),
            ("/../a", "/a"),
            ("/a/b/..", "/a"),
            ("/a/./b/../../..", "/"),
            ("a/../..", "/base"),
            ("a/.../b", "/base/dir/a/.../b"),
            ("..a/b..", "/base/dir/..a/b.."),
            ("/tmp/x/", "/tmp/x"),
            ("é/ü", "/base/dir/é/ü"),
        ];
        for (input, expected) in cases {
            let got = resolve_lexical(Path::new("/base/dir"), input);
            assert_eq!(s(&got), expected, "path.resolve({input:?})");
        }
        // The base is normalised too, and `..` at the root stays there.
        assert_eq!(s(&resolve_lexical(Path::new("//x//"), "y/")), "/x/y");
        assert_eq!(s(&resolve_lexical(Path::new("/"), "..")), "/");
        assert_eq!(s(&resolve_lexical(Path::new("/"), "")), "/");
    }

    #[test]
    fn clean_paths_are_recognised_exactly() {
        let cases = [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/.",
            "/..",
            "/a/.",
            "/a/..",
            "/.a",
            "/..a",
            "/a.",
            "/a/b.lock",
            "/a/.crew/state",
            "a",
            "a/b",
            "",
            ".",
            "./a",
            "/a/...",
            "/a/b/c/",
        ];
        for case in cases {
            let p = case.as_bytes();
            assert_eq!(is_normal_rooted(p), fold_segments(p, true) == p, "{case:?}");
            assert_eq!(
                normalize(p.to_vec(), true),
                fold_segments(p, true),
                "{case:?}"
            );
        }
    }

    #[test]
    fn node_join_normalises_like_path_join() {
        assert_eq!(s(&node_join(Path::new("/"), ".crew")), "/.crew");
        assert_eq!(s(&node_join(Path::new("/a/"), "teams")), "/a/teams");
        assert_eq!(s(&node_join(Path::new("/a//b"), "c")), "/a/b/c");
        assert_eq!(s(&node_join(Path::new("rel/../.."), "x")), "../x");
    }

    #[test]
    fn cwd_hash_is_lowercase_hex_sha256() {
        // printf %s /tmp/x | sha256sum
        assert_eq!(
            cwd_hash(Path::new("/tmp/x")),
            "2e56aa36f538b33b48f37ef51e54ddb5cb9c7935e65c296b7494a17e8dff2a12"
        );
    }

    #[test]
    fn tmpdir_follows_node_os_tmpdir() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(*v))
            }
        };
        assert_eq!(node_tmpdir(env(&[]), false), "/tmp");
        assert_eq!(node_tmpdir(env(&[("TMPDIR", "/x/")]), false), "/x");
        assert_eq!(node_tmpdir(env(&[("TMPDIR", "/")]), false), "/");
        assert_eq!(node_tmpdir(env(&[("TMPDIR", "//")]), false), "/");
        assert_eq!(node_tmpdir(env(&[("TMPDIR", "/x//")]), false), "/x/");
        assert_eq!(
            node_tmpdir(
                env(&[("TMPDIR", ""), ("TMP", "/t/"), ("TEMP", "/e")]),
                false
            ),
            "/t"
        );
        assert_eq!(node_tmpdir(env(&[("TEMP", "rel")]), false), "rel");
        assert_eq!(node_tmpdir(env(&[("TMPDIR", "/x")]), true), "/tmp");
    }

    #[test]
    fn homedir_uses_home_even_when_empty() {
        let got = node_homedir(|_| Some(OsString::from("/h"))).expect("home");
        assert_eq!(got, "/h");
        let got = node_homedir(|_| Some(OsString::new())).expect("home");
        assert_eq!(got, "");
        // Unset: the passwd entry of the effective uid, which every test runner has.
        let got = node_homedir(|_| None).expect("passwd home");
        assert!(got.starts_with('/'), "{got:?}");
    }

    #[test]
    fn the_process_context_gives_absolute_paths() {
        let ctx = PathContext::for_cwd("").expect("context");
        for p in [&ctx.process_cwd, &ctx.home, &ctx.tmp] {
            assert!(p.is_absolute(), "{p:?}");
        }
    }

    #[test]
    fn marker_at_the_cwd_itself() {
        let l = Layout::new("self");
        let proj = l.mkdir("home/proj");
        l.mkdir("home/proj/.git");
        assert_same(&root_of(&l, &proj).expect("root"), &proj);
        let lock = workspace_lock_path(s(&proj), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &proj));
    }

    #[test]
    fn marker_two_and_three_levels_up() {
        let l = Layout::new("up");
        let proj = l.mkdir("home/proj");
        l.touch("home/proj/Cargo.toml");
        let two = l.mkdir("home/proj/a/b");
        let three = l.mkdir("home/proj/a/b/c");
        assert_same(&root_of(&l, &two).expect("root"), &proj);
        assert_same(&root_of(&l, &three).expect("root"), &proj);
        let lock = workspace_lock_path(s(&three), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &three));
    }

    #[test]
    fn nearest_marker_wins() {
        let l = Layout::new("nearest");
        l.mkdir("home/outer/.git");
        let inner = l.mkdir("home/outer/inner");
        l.touch("home/outer/inner/package.json");
        let cwd = l.mkdir("home/outer/inner/src");
        assert_same(&root_of(&l, &cwd).expect("root"), &inner);
    }

    #[test]
    fn every_marker_kind_is_recognised() {
        let l = Layout::new("kinds");
        for (i, marker) in MARKERS.iter().enumerate() {
            let proj = l.mkdir(&format!("home/m{i}"));
            if marker.starts_with('.') {
                l.mkdir(&format!("home/m{i}/{marker}"));
            } else {
                l.touch(&format!("home/m{i}/{marker}"));
            }
            let cwd = l.mkdir(&format!("home/m{i}/x/y"));
            let found = root_of(&l, &cwd);
            assert_eq!(found.as_deref(), Some(proj.as_path()), "marker {marker}");
        }
    }

    #[test]
    fn dangling_symlink_is_not_a_marker() {
        let l = Layout::new("dangling");
        let proj = l.mkdir("home/proj");
        symlink(l.root.join("nowhere"), proj.join(".git")).expect("symlink");
        assert_eq!(root_of(&l, &proj), None);
        let lock = workspace_lock_path(s(&proj), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &proj));
    }

    #[test]
    fn symlink_to_a_file_is_a_marker() {
        let l = Layout::new("filelink");
        let target = l.touch("elsewhere/real.json");
        let proj = l.mkdir("home/proj");
        symlink(&target, proj.join("package.json")).expect("symlink");
        let cwd = l.mkdir("home/proj/sub");
        assert_same(&root_of(&l, &cwd).expect("root"), &proj);
    }

    #[test]
    fn no_marker_up_to_home_means_no_root() {
        let l = Layout::new("none");
        // A marker above home must not be reached.
        l.mkdir(".git");
        let cwd = l.mkdir("home/a/b");
        assert_eq!(root_of(&l, &cwd), None);
        let lock = workspace_lock_path(s(&cwd), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&cwd.join(".crew"), &cwd));
    }

    #[test]
    fn cwd_equal_to_home_has_no_root_even_with_a_marker() {
        let l = Layout::new("home");
        let home = l.home();
        l.mkdir("home/.git");
        assert_eq!(root_of(&l, &home), None);
        let lock = workspace_lock_path(s(&home), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&home.join(".crew"), &home));
    }

    #[test]
    fn home_is_compared_after_realpath() {
        let l = Layout::new("homelink");
        l.mkdir(".git");
        let mut ctx = l.ctx.clone();
        ctx.home = l.root.join("homelink");
        symlink(l.home(), &ctx.home).expect("symlink");
        let cwd = l.mkdir("home/a");
        assert_eq!(find_repo_root(&cwd, &ctx).expect("walk"), None);
    }

    #[test]
    fn cwd_equal_to_or_inside_tmp() {
        let l = Layout::new("tmp");
        l.mkdir(".git");
        let tmp = l.ctx.tmp.clone();
        l.mkdir("tmp/.git");
        assert_eq!(root_of(&l, &tmp), None);
        // Below tmp a marker still counts; above it is never reached.
        let plain = l.mkdir("tmp/plain/deep");
        assert_eq!(root_of(&l, &plain), None);
        let proj = l.mkdir("tmp/proj");
        l.touch("tmp/proj/go.mod");
        let deep = l.mkdir("tmp/proj/deep");
        assert_same(&root_of(&l, &deep).expect("root"), &proj);
    }

    #[test]
    fn root_equal_to_tmp_means_no_root() {
        let l = Layout::new("slash");
        let mut ctx = l.ctx.clone();
        ctx.tmp = PathBuf::from("/");
        assert_eq!(find_repo_root(Path::new("/"), &ctx).expect("walk"), None);
    }

    #[test]
    fn existing_crew_dir_is_realpathed() {
        let l = Layout::new("crew");
        let proj = l.mkdir("home/proj");
        l.mkdir("home/proj/.crew");
        assert_same(&crew_root(&proj).expect("crew"), &proj.join(".crew"));
    }

    #[test]
    fn crew_symlink_resolves_to_its_target() {
        let l = Layout::new("crewlink");
        let target = l.mkdir("elsewhere/crewdata");
        let proj = l.mkdir("home/proj");
        symlink(&target, proj.join(".crew")).expect("symlink");
        let cwd = l.mkdir("home/proj/src");
        let lock = workspace_lock_path(s(&cwd), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&target, &cwd));
    }

    #[test]
    fn pi_without_crew_uses_pi_teams() {
        let l = Layout::new("pi");
        let real_pi = l.mkdir("elsewhere/pi");
        let proj = l.mkdir("home/proj");
        symlink(&real_pi, proj.join(".pi")).expect("symlink");
        assert_same(&crew_root(&proj).expect("crew"), &real_pi.join("teams"));
        let lock = workspace_lock_path(s(&proj), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&real_pi.join("teams"), &proj));
    }

    #[test]
    fn crew_wins_over_pi() {
        let l = Layout::new("both");
        let proj = l.mkdir("home/proj");
        l.mkdir("home/proj/.pi");
        l.mkdir("home/proj/.crew");
        assert_same(&crew_root(&proj).expect("crew"), &proj.join(".crew"));
    }

    #[test]
    fn crew_root_of_slash_is_lexical_join() {
        // Only meaningful when `/` has neither entry, which is the normal case.
        if fs::metadata("/.crew").is_err() && fs::metadata("/.pi").is_err() {
            assert_eq!(s(&crew_root(Path::new("/")).expect("crew")), "/.crew");
        }
    }

    #[test]
    fn nonexistent_cwd_walks_up_lexically() {
        let l = Layout::new("enoent");
        let proj = l.mkdir("home/proj");
        l.touch("home/proj/pyproject.toml");
        let ghost = proj.join("not/there/yet");
        assert_same(&root_of(&l, &ghost).expect("root"), &proj);
        let lock = workspace_lock_path(s(&ghost), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &ghost));

        let lost = l.home().join("ghost/dir");
        assert_eq!(root_of(&l, &lost), None);
        let lock = workspace_lock_path(s(&lost), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&lost.join(".crew"), &lost));
    }

    #[test]
    fn file_component_in_cwd_is_enotdir() {
        let l = Layout::new("enotdir");
        let file = l.touch("home/proj/file");
        l.mkdir("home/proj/.git");
        let cwd = file.join("sub");
        let err = workspace_lock_path(s(&cwd), &l.ctx).expect_err("ENOTDIR");
        let LockError::Io(failure) = err else {
            panic!("not an I/O error: {err:?}");
        };
        assert_eq!(failure, IoFailure::new(libc::ENOTDIR, "realpath", &cwd));
        assert_eq!(failure.code(), "ENOTDIR");
    }

    #[test]
    fn nul_in_cwd_is_a_type_error() {
        let l = Layout::new("nul");
        let err = workspace_lock_path("a\0b", &l.ctx).expect_err("type error");
        let LockError::Type(msg) = err else {
            panic!("not a type error: {err:?}");
        };
        let expected = format!(
            "The argument 'path' must be a string, Uint8Array, or URL without null bytes. \
             Received '{}/a\\x00b'",
            s(&l.root)
        );
        assert_eq!(msg, expected);
    }

    #[test]
    fn inspect_quotes_like_node() {
        // Expected values: what Node 20 prints after "Received " for fs.realpathSync(value).
        assert_eq!(node_inspect_string("/a\0b"), r"'/a\x00b'");
        assert_eq!(node_inspect_string("/tmp/a\0bé'"), r#""/tmp/a\x00bé'""#);
        assert_eq!(node_inspect_string("'\"${\0"), r#"'\'"${\x00'"#);
        assert_eq!(
            node_inspect_string("/a\0\n\u{7f}\u{85}\\byyyy\nzz"),
            r"'/a\x00\n\x7F\x85\\byyyy\nzz'"
        );
        let long = node_inspect_string(&format!("/{}\0", "x".repeat(300)));
        assert_eq!(long, format!("'/{}...", "x".repeat(126)));
    }

    #[test]
    fn symlinked_cwd_hashes_lexically_but_walks_the_realpath() {
        let l = Layout::new("cwdlink");
        let proj = l.mkdir("home/proj");
        l.mkdir("home/proj/.git");
        let real = l.mkdir("home/proj/sub");
        l.mkdir("home/other");
        let link = l.root.join("home/other/link");
        symlink(&real, &link).expect("symlink");
        assert_same(&root_of(&l, &link).expect("root"), &proj);
        let lock = workspace_lock_path(s(&link), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &link));
        assert_ne!(cwd_hash(&link), cwd_hash(&real));
    }

    #[test]
    fn trailing_slash_and_relative_cwd_agree_with_clean_absolute() {
        let l = Layout::new("spellings");
        l.mkdir("home/proj/.git");
        let cwd = l.mkdir("home/proj/sub");
        let clean = workspace_lock_path(s(&cwd), &l.ctx).expect("clean");
        let slashed = workspace_lock_path(&format!("{}/", s(&cwd)), &l.ctx).expect("slash");
        let doubled = workspace_lock_path(&format!("{}//./", s(&cwd)), &l.ctx).expect("double");
        let mut ctx = l.ctx.clone();
        ctx.process_cwd = l.root.join("home/proj");
        let relative = workspace_lock_path("sub", &ctx).expect("relative");
        let dotted = workspace_lock_path("./x/../sub/", &ctx).expect("dotted");
        for other in [&slashed, &doubled, &relative, &dotted] {
            assert_same(other, &clean);
        }
        let empty = workspace_lock_path("", &ctx).expect("empty");
        assert_same(
            &empty,
            &expected_lock(&ctx.process_cwd.join(".crew"), &ctx.process_cwd),
        );
    }

    /// Whether this kernel (and any seccomp filter) lets openat2 through; without it every
    /// realpath takes libc's way, which the equivalence tests cover anyway.
    fn openat2_works() -> bool {
        crate::sys::open_without_symlinks(Path::new("/"), crate::sys::O_PATH, 0).is_ok()
    }

    #[test]
    fn realpath_agrees_with_libc_on_every_shape_of_path() {
        let l = Layout::new("realpath");
        let deep = l.mkdir("home/a/b/c");
        l.touch("home/a/b/file.txt");
        symlink(&deep, l.root.join("home/a/last")).expect("symlink");
        symlink(l.root.join("home/a"), l.root.join("alias")).expect("symlink");
        symlink(l.root.join("nowhere"), l.root.join("home/dangling")).expect("symlink");
        symlink(l.root.join("home/loop"), l.root.join("home/loop")).expect("symlink");
        let r = s(&l.root).to_owned();
        let cases = [
            format!("{r}/home/a/b/c"),
            format!("{r}/home/a/b/file.txt"),
            format!("{r}/home/a/last"),
            format!("{r}/alias/b/c"),
            format!("{r}/home/a/b/missing"),
            format!("{r}/home/a/b/file.txt/sub"),
            format!("{r}/home/dangling"),
            format!("{r}/home/loop"),
            format!("{r}/home/a/b/c/"),
            format!("{r}//home/a/b/c"),
            format!("{r}/home/a/./b/c"),
            format!("{r}/home/a/b/c/.."),
            format!("{r}/home/a/b/c/../../b"),
            r.clone(),
            "/".to_owned(),
            "/proc/self/cwd".to_owned(),
        ];
        for case in &cases {
            let path = Path::new(case);
            let ours = realpath(path).map(|(p, _)| p).map_err(|e| e.raw_os_error());
            let libc = fs::canonicalize(path).map_err(|e| e.raw_os_error());
            assert_eq!(ours, libc, "realpath({case:?})");
        }
        // Only a clean, symlink-free path that exists takes the openat2 way (a file too).
        if openat2_works() {
            for case in &cases[..2] {
                assert!(
                    realpath(Path::new(case)).expect(case).1.is_some(),
                    "{case:?}"
                );
            }
            for case in &cases[2..] {
                assert!(open_if_symlink_free(Path::new(case)).is_none(), "{case:?}");
            }
        }
    }

    #[test]
    fn ancestors_are_matched_component_wise() {
        let yes = [
            ("/tmp", "/tmp/x"),
            ("/tmp/x", "/tmp/x"),
            ("/", "/a"),
            ("/", "/"),
        ];
        for (dir, path) in yes {
            assert!(
                is_ancestor_or_self(Path::new(dir), Path::new(path)),
                "{dir} {path}"
            );
        }
        let no = [
            ("/tm", "/tmp/x"),
            ("/tmp/x/", "/tmp/x/y"),
            ("/tmp/x/y", "/tmp/x"),
            ("", "/a"),
            ("tmp", "tmp/x"),
        ];
        for (dir, path) in no {
            assert!(
                !is_ancestor_or_self(Path::new(dir), Path::new(path)),
                "{dir} {path}"
            );
        }
    }

    #[test]
    fn cwd_that_is_a_regular_file_walks_from_its_folder() {
        let l = Layout::new("filecwd");
        let proj = l.mkdir("home/proj");
        l.mkdir("home/proj/.git");
        let file = l.touch("home/proj/src/main.rs");
        assert_same(&root_of(&l, &file).expect("root"), &proj);
        let lock = workspace_lock_path(s(&file), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &file));
        // Nothing found: the file itself stands as the crew folder's parent, lexically.
        let lone = l.touch("home/lone.txt");
        let lock = workspace_lock_path(s(&lone), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&lone.join(".crew"), &lone));
    }

    #[test]
    #[cfg_attr(not(symlink_free_open), ignore = "needs a symlink-free open (openat2)")]
    fn crew_at_the_cwd_takes_the_short_way_and_agrees_with_the_walk() {
        let l = Layout::new("crewfast");
        let cases = [
            ("home", true),            // the cwd is home: no repo root, home hosts .crew
            ("tmp", true),             // the same for tmp
            ("home/proj", true),       // .crew beside .git
            ("home/proj/sub", true),   // .crew in a folder of a repo: itself a marker
            ("home/file-crew", true),  // .crew a regular file: still a marker, its own path
            ("home/link-crew", false), // .crew a symlink: realpath'd by the walk
            ("alias/sub", false),      // a symlinked ancestor: the walk's realpath
            ("home/bare", false),      // no .crew at all
        ];
        l.mkdir("home/proj/.git");
        l.mkdir("home/proj/sub");
        l.touch("home/file-crew/.crew");
        l.mkdir("elsewhere/crew");
        l.mkdir("home/link-crew");
        symlink(
            l.root.join("elsewhere/crew"),
            l.root.join("home/link-crew/.crew"),
        )
        .expect("ln");
        symlink(l.root.join("home/proj"), l.root.join("alias")).expect("ln");
        l.mkdir("home/bare");
        for (rel, short) in cases {
            let cwd = l.root.join(rel);
            if !cwd.join(".crew").exists() && rel != "home/bare" {
                l.mkdir(&format!("{rel}/.crew"));
            }
            let fast = crew_in_symlink_free_cwd(&cwd);
            assert_eq!(fast, short, "{rel}");
            // The one-statx proof a busy check uses once the lockfile's open met ENOENT (a
            // symlink on the way fails that open with ELOOP instead).
            let usual = UsualLockPath::of(s(&cwd), &l.ctx);
            match open_without_symlinks(&usual.path, libc::O_RDONLY, 0) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    assert_eq!(usual.crew_is_symlink_free_after_enoent(), short, "{rel}");
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => assert!(!short, "{rel}"),
                other => assert_eq!(rel, "home/file-crew", "{other:?}"), // ENOTDIR
            }
            if rel == "home/link-crew" {
                assert!(!usual.crew_is_symlink_free_after_enoent());
            }
            let walked = crew_root_by_walking(&cwd, &l.ctx).expect("walk");
            if fast {
                assert_same(&cwd.join(".crew"), &walked);
            }
            let expected = match rel {
                "home/link-crew" => l.root.join("elsewhere/crew"),
                "alias/sub" => l.root.join("home/proj/sub/.crew"),
                _ => cwd.join(".crew"),
            };
            assert_same(&walked, &expected);
            let lock = workspace_lock_path(s(&cwd), &l.ctx).expect("lock");
            assert_same(&lock, &expected_lock(&expected, &cwd));
        }
    }

    #[test]
    fn cwd_under_a_symlinked_ancestor_walks_the_realpath() {
        let l = Layout::new("ancestorlink");
        let proj = l.mkdir("home/proj");
        l.mkdir("home/proj/.git");
        l.mkdir("home/proj/sub/deep");
        symlink(&proj, l.root.join("alias")).expect("symlink");
        let cwd = l.root.join("alias/sub/deep");
        assert_same(&root_of(&l, &cwd).expect("root"), &proj);
        let lock = workspace_lock_path(s(&cwd), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &cwd));
    }

    #[test]
    fn cwd_whose_last_component_is_a_symlink_walks_the_realpath() {
        let l = Layout::new("lastlink");
        let proj = l.mkdir("home/proj");
        l.touch("home/proj/Cargo.toml");
        let real = l.mkdir("home/proj/a/b");
        // The link's own folder is a repo root with a `.crew`: the walk never sees it.
        l.mkdir("home/other/.crew");
        let link = l.root.join("home/other/link");
        symlink(&real, &link).expect("symlink");
        assert_same(&root_of(&l, &link).expect("root"), &proj);
        let lock = workspace_lock_path(s(&link), &l.ctx).expect("lock");
        assert_same(&lock, &expected_lock(&proj.join(".crew"), &link));
    }

    #[test]
    fn home_as_a_prefix_of_the_cwd_stops_the_walk() {
        let l = Layout::new("homeprefix");
        l.mkdir(".git");
        let cwd = l.mkdir("home/a/b");
        assert_eq!(root_of(&l, &cwd), None);
        // Spelt with a trailing slash it is no prefix, but its realpath still matches.
        let mut ctx = l.ctx.clone();
        ctx.home = PathBuf::from(format!("{}/", s(&l.home())));
        assert_eq!(find_repo_root(&cwd, &ctx).expect("walk"), None);
        // A byte prefix that is not a folder of the cwd (`…/ho` of `…/home/a/b`) is
        // realpath'd: here it is a symlink to home, so the walk still stops there.
        ctx.home = l.root.join("ho");
        symlink(l.home(), &ctx.home).expect("symlink");
        assert_eq!(find_repo_root(&cwd, &ctx).expect("walk"), None);
        // And one that resolves elsewhere does not stop it.
        ctx.home = l.root.join("hom");
        symlink(l.root.join("tmp"), &ctx.home).expect("symlink");
        assert_same(
            &find_repo_root(&cwd, &ctx).expect("walk").expect("root"),
            &l.root,
        );
    }

    #[test]
    fn tmp_as_a_prefix_of_the_cwd_stops_the_walk() {
        let l = Layout::new("tmpprefix");
        l.mkdir(".git");
        let mut ctx = l.ctx.clone();
        // Home elsewhere and missing: its realpath fails and it stays as given.
        ctx.home = l.root.join("no/such/home");
        let cwd = l.mkdir("tmp/a/b");
        assert_eq!(find_repo_root(&cwd, &ctx).expect("walk"), None);
        let lock = workspace_lock_path(s(&cwd), &ctx).expect("lock");
        assert_same(&lock, &expected_lock(&cwd.join(".crew"), &cwd));
        // Reached through a symlink, the cwd's realpath is under tmp all the same.
        symlink(l.root.join("tmp/a"), l.root.join("via")).expect("symlink");
        let via = l.root.join("via/b");
        assert_eq!(find_repo_root(&via, &ctx).expect("walk"), None);
    }

    /// One entry to create in a folder.
    enum Entry {
        Dir(&'static str),
        File(&'static str),
        /// A symlink to a fresh folder outside the layout's home.
        Link(&'static str),
        Dangling(&'static str),
    }

    /// The crew folder found after a walk must be what `crew_root` (no shortcut: stat, then
    /// realpath) gives for the same folder, whatever marker the walk stopped at and whatever
    /// `.crew` and `.pi` are.
    #[test]
    fn crew_lookups_agree_with_a_fresh_crew_root() {
        use Entry::*;
        let setups: [&[Entry]; 10] = [
            &[Dir(".git")],
            &[Dir(".git"), Dir(".crew")],
            &[Dir(".git"), Dangling(".crew")],
            &[Dir(".git"), File(".crew"), Dir(".pi")],
            &[Dir(".git"), Dangling(".crew"), Link(".pi")],
            &[Dir(".pi")],
            &[Link(".pi")],
            &[Dir(".crew")],
            &[Link(".crew"), Dir(".pi")],
            &[File("Cargo.toml")],
        ];
        for (i, setup) in setups.iter().enumerate() {
            let l = Layout::new(&format!("agree{i}"));
            let create = |dir: &Path| {
                for (j, entry) in setup.iter().enumerate() {
                    match entry {
                        Dir(name) => drop(fs::create_dir(dir.join(name))),
                        File(name) => fs::write(dir.join(name), b"").expect("write"),
                        Link(name) => {
                            let target = l.root.join(format!("elsewhere/{j}-{}", dir.is_dir()));
                            fs::create_dir_all(&target).expect("mkdir target");
                            let _ = fs::remove_dir(dir.join(name));
                            symlink(&target, dir.join(name)).expect("symlink");
                        }
                        Dangling(name) => {
                            symlink(l.root.join("nowhere"), dir.join(name)).expect("symlink")
                        }
                    }
                }
            };
            // A repo root found at the cwd and above it; then the cwd being home (no root).
            let proj = l.mkdir("home/p");
            create(&proj);
            let below = l.mkdir("home/p/x/y");
            for cwd in [&proj, &below] {
                let lock = workspace_lock_path(s(cwd), &l.ctx).expect("lock");
                let crew = crew_root(&proj).expect("crew");
                assert_same(&lock, &expected_lock(&crew, cwd));
            }
            let home = l.home();
            create(&home);
            let lock = workspace_lock_path(s(&home), &l.ctx).expect("lock");
            let crew = crew_root(&home).expect("crew");
            assert_same(&lock, &expected_lock(&crew, &home));
        }
    }

    #[test]
    fn unsearchable_cwd_fails_like_realpath() {
        // SAFETY: no arguments, cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Root searches every folder: nothing to observe.
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let l = Layout::new("eacces");
        let locked = l.mkdir("home/locked");
        let cwd = l.mkdir("home/locked/inner/deep");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        let result = workspace_lock_path(s(&cwd), &l.ctx);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod back");
        let err = result.expect_err("EACCES");
        assert_eq!(
            err,
            LockError::Io(IoFailure::new(libc::EACCES, "realpath", &cwd))
        );
    }
}
