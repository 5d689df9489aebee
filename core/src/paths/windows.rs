//! `workspaceLockPath(cwd)` on Windows, as the original computes it there: Node's
//! `path.win32` ([`super::win32`]), `os.homedir()`, `os.tmpdir()`, and `fs.realpathSync`,
//! whose JavaScript walk (an lstat per component, a readlink per symlink or junction) is
//! ported here: it keeps the case of the path as given, and resolves links only.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::node_inspect_string;
use super::win32;
use super::MARKERS;
use crate::error::LockError;
use crate::sys;

/// What `process.cwd()`, `os.homedir()` and `os.tmpdir()` give in this process (the latter
/// two `path.resolve()`d).
#[derive(Debug, Clone)]
pub struct PathContext {
    pub process_cwd: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

fn lossy(s: &std::ffi::OsStr) -> String {
    s.to_string_lossy().into_owned()
}

fn getenv(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| lossy(&v))
}

/// `process.env["=C:"]`: the drive's own cwd, set by cmd.exe for drive-relative paths.
fn drive_cwd(device: &str) -> Option<String> {
    getenv(&format!("={device}"))
}

fn text(path: &Path) -> &str {
    // Every path here was made from a String.
    path.to_str().unwrap_or_default()
}

/// `process.cwd()` as libuv's uv_cwd gives it: the drive letter upper-cased, no trailing
/// backslash but at a drive's root.
fn node_cwd() -> Result<String, LockError> {
    let dir = std::env::current_dir().map_err(|e| LockError::io(&e, "uv_cwd", Path::new("")))?;
    let mut cwd = lossy(dir.as_os_str());
    if cwd.len() > 3 && cwd.ends_with('\\') {
        cwd.pop();
    }
    let bytes = cwd.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_lowercase() {
        cwd.replace_range(..1, &cwd[..1].to_ascii_uppercase());
    }
    Ok(cwd)
}

impl PathContext {
    pub fn for_cwd(_cwd: &str) -> Result<PathContext, LockError> {
        let process_cwd = node_cwd()?;
        let home = win32::homedir(&getenv, &crate::sys::user_profile_dir)
            .ok_or_else(|| LockError::errno(libc::ENOENT, "uv_os_homedir", Path::new("")))?;
        let tmp = win32::tmpdir(&getenv);
        Ok(PathContext {
            home: PathBuf::from(win32::resolve(&[&home], &process_cwd, &drive_cwd)),
            tmp: PathBuf::from(win32::resolve(&[&tmp], &process_cwd, &drive_cwd)),
            process_cwd: PathBuf::from(process_cwd),
        })
    }

    pub(super) fn resolve(&self, p: &str) -> String {
        win32::resolve(&[p], text(&self.process_cwd), &drive_cwd)
    }
}

/// Lowercase hex sha256 of the absolute cwd's UTF-8 bytes.
pub fn cwd_hash(abs_cwd: &Path) -> String {
    let mut hex = String::with_capacity(64 + ".lock".len());
    for b in Sha256::digest(text(abs_cwd).as_bytes()) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// `(?:[a-zA-Z]:|[\\/]{2}[^\\/]+[\\/][^\\/]+)?[\\/]*` at the start of `p`: Node's
/// splitRoot on Windows.
fn split_root(p: &str) -> &str {
    let b = p.as_bytes();
    let sep = |c: u8| c == b'\\' || c == b'/';
    let mut at = 0;
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        at = 2;
    } else if b.len() >= 2 && sep(b[0]) && sep(b[1]) {
        let server_end = (2..b.len()).find(|&i| sep(b[i])).unwrap_or(b.len());
        if server_end > 2 && server_end < b.len() {
            let share_end = (server_end + 1..b.len())
                .find(|&i| sep(b[i]))
                .unwrap_or(b.len());
            if share_end > server_end + 1 {
                at = share_end;
            }
        }
    }
    while at < b.len() && sep(b[at]) {
        at += 1;
    }
    &p[..at]
}

/// What `fs.readlinkSync` gives for a symlink or junction: its target without the NT or
/// verbatim prefix.
fn readlink(path: &str) -> std::io::Result<String> {
    let target = lossy(std::fs::read_link(path)?.as_os_str());
    for (prefix, with) in [
        ("\\\\?\\UNC\\", "\\\\"),
        ("\\??\\UNC\\", "\\\\"),
        ("\\\\?\\", ""),
        ("\\??\\", ""),
    ] {
        if let Some(rest) = target.strip_prefix(prefix) {
            return Ok(format!("{with}{rest}"));
        }
    }
    Ok(target)
}

/// `fs.realpathSync(p)` for an absolute, resolved `p` (Node's JavaScript implementation on
/// Windows); the error names the component that failed, as Node's does.
fn realpath(p: &str, cwd: &str) -> Result<String, (std::io::Error, String)> {
    let lstat = |base: &str| std::fs::symlink_metadata(base).map_err(|e| (e, base.to_string()));
    let mut p = p.to_string();
    let mut current = split_root(&p).to_string();
    let mut base = current.clone();
    let mut pos = current.len();
    let mut known_hard: HashSet<String> = HashSet::new();
    lstat(&base)?;
    known_hard.insert(base.clone());
    // Bounded like the kernel's symlink limit: a loop of links ends in ELOOP.
    let mut links = 0;
    while pos < p.len() {
        let previous = current.clone();
        match p[pos..].find(['\\', '/']).map(|i| i + pos) {
            None => {
                current.push_str(&p[pos..]);
                base = format!("{previous}{}", &p[pos..]);
                pos = p.len();
            }
            Some(at) => {
                current.push_str(&p[pos..=at]);
                base = format!("{previous}{}", &p[pos..at]);
                pos = at + 1;
            }
        }
        if known_hard.contains(&base) {
            continue;
        }
        if !lstat(&base)?.file_type().is_symlink() {
            known_hard.insert(base.clone());
            continue;
        }
        links += 1;
        if links > 40 {
            return Err((std::io::Error::from_raw_os_error(1921), base));
        }
        std::fs::metadata(&base).map_err(|e| (e, base.clone()))?;
        let target = readlink(&base).map_err(|e| (e, base.clone()))?;
        let resolved_link = win32::resolve(&[&previous, &target], cwd, &drive_cwd);
        p = win32::resolve(&[&resolved_link, &p[pos..]], cwd, &drive_cwd);
        current = split_root(&p).to_string();
        base = current.clone();
        pos = current.len();
        if !known_hard.contains(&base) {
            lstat(&base)?;
            known_hard.insert(base.clone());
        }
    }
    Ok(p)
}

fn realpath_error(e: &std::io::Error, at: &str) -> LockError {
    LockError::io(e, "lstat", Path::new(at))
}

fn exists(p: &str) -> bool {
    std::fs::metadata(p).is_ok()
}

fn has_marker(dir: &str) -> bool {
    MARKERS.iter().any(|m| exists(&win32::join(dir, &[m])))
}

/// findRepoRoot: from `realpath(absCwd)` up to the drive's or share's root, stopping at the
/// home and temp dirs.
pub fn find_repo_root(abs_cwd: &Path, ctx: &PathContext) -> Result<Option<PathBuf>, LockError> {
    let abs = text(abs_cwd);
    if abs.contains('\0') {
        return Err(LockError::Type(format!(
            "The argument 'path' must be a string, Uint8Array, or URL without null bytes. Received {}",
            node_inspect_string(abs)
        )));
    }
    let cwd = text(&ctx.process_cwd);
    let start = match realpath(abs, cwd) {
        Ok(real) => real,
        Err((e, _)) if sys::errno(&e) == Some(libc::ENOENT) => abs.to_string(),
        Err((e, at)) => return Err(realpath_error(&e, &at)),
    };
    let real_or = |p: &Path| realpath(text(p), cwd).unwrap_or_else(|_| text(p).to_string());
    let (home, tmp) = (real_or(&ctx.home), real_or(&ctx.tmp));
    let mut current = start;
    loop {
        if current == home || current == tmp {
            return Ok(None);
        }
        if has_marker(&current) {
            return Ok(Some(PathBuf::from(current)));
        }
        let parent = win32::dirname(&current);
        if parent == current {
            return Ok(None);
        }
        current = parent;
    }
}

/// crewRoot for a repo root.
pub fn crew_root(repo_root: &Path) -> Result<PathBuf, LockError> {
    let root = text(repo_root);
    let cwd = node_cwd().unwrap_or_default();
    let crew = win32::join(root, &[".crew"]);
    if exists(&crew) {
        return realpath(&crew, &cwd)
            .map(PathBuf::from)
            .map_err(|(e, at)| realpath_error(&e, &at));
    }
    let pi = win32::join(root, &[".pi"]);
    if exists(&pi) {
        let real = realpath(&pi, &cwd).map_err(|(e, at)| realpath_error(&e, &at))?;
        return Ok(PathBuf::from(win32::join(&real, &["teams"])));
    }
    Ok(PathBuf::from(crew))
}

/// The whole thing: workspaceLockPath(cwd).
pub fn workspace_lock_path(cwd: &str, ctx: &PathContext) -> Result<PathBuf, LockError> {
    let abs = ctx.resolve(cwd);
    let abs_path = PathBuf::from(&abs);
    let repo_root = find_repo_root(&abs_path, ctx)?.unwrap_or_else(|| abs_path.clone());
    let crew = crew_root(&repo_root)?;
    let name = format!("{}.lock", cwd_hash(&abs_path));
    Ok(PathBuf::from(win32::join(
        text(&crew),
        &["state", "workspace-locks", &name],
    )))
}

/// pi-crew's usual lock path, `absCwd\.crew\state\workspace-locks\<hash>.lock`. Never
/// proven the lock path by an open on Windows (no open refuses every reparse point on the
/// way): [`UsualLockPath::resolved`] always walks.
pub struct UsualLockPath {
    cwd: String,
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl UsualLockPath {
    pub fn of(cwd: &str, ctx: &PathContext) -> UsualLockPath {
        let abs = ctx.resolve(cwd);
        let dir = win32::join(&abs, &[".crew", "state", "workspace-locks"]);
        let name = format!("{}.lock", cwd_hash(Path::new(&abs)));
        let path = win32::join(&dir, &[&name]);
        UsualLockPath {
            cwd: cwd.to_string(),
            dir: PathBuf::from(dir),
            path: PathBuf::from(path),
        }
    }

    pub fn crew_is_symlink_free(&self) -> bool {
        false
    }

    pub fn crew_is_symlink_free_after_enoent(&self) -> bool {
        false
    }

    pub fn resolved(self, ctx: &PathContext) -> Result<PathBuf, LockError> {
        self.walked(ctx)
    }

    pub fn walked(&self, ctx: &PathContext) -> Result<PathBuf, LockError> {
        workspace_lock_path(&self.cwd, ctx)
    }
}

/// No open refuses every reparse point on the way here: callers take their full way.
pub fn open_without_symlinks(
    _path: &Path,
    _flags: i32,
    _mode: u32,
) -> std::io::Result<std::os::windows::io::OwnedHandle> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_root_is_nodes() {
        assert_eq!(split_root("C:\\a\\b"), "C:\\");
        assert_eq!(split_root("C:"), "C:");
        assert_eq!(split_root("\\\\srv\\share\\a"), "\\\\srv\\share\\");
        assert_eq!(split_root("\\\\srv"), "\\\\");
        assert_eq!(split_root("\\a"), "\\");
    }

    /// The home directory when `USERPROFILE` is unset comes from the system: the same
    /// directory (Windows, and Wine, set `USERPROFILE` from it for every process).
    #[test]
    fn the_system_profile_directory_is_the_users_home() {
        let profile = sys::user_profile_dir().expect("GetUserProfileDirectoryW");
        let env = std::env::var("USERPROFILE").expect("USERPROFILE set by the system");
        assert_eq!(profile.to_lowercase(), env.to_lowercase());
        assert_eq!(
            win32::homedir(&|_| None, &sys::user_profile_dir).as_deref(),
            Some(profile.as_str()),
            "the fallback of os.homedir() without USERPROFILE"
        );
    }

    #[test]
    fn realpath_keeps_the_case_given_and_fails_like_lstat() {
        let dir = crate::test_support::TempDir::new("win-realpath");
        let root = dir.path().to_str().unwrap().to_string();
        std::fs::create_dir_all(format!("{root}\\Sub\\Deep")).unwrap();
        let cwd = node_cwd().unwrap();
        let real = realpath(&format!("{root}\\Sub\\Deep"), &cwd).unwrap();
        assert_eq!(real, format!("{root}\\Sub\\Deep"));
        let (e, at) = realpath(&format!("{root}\\Sub\\missing\\x"), &cwd).unwrap_err();
        assert_eq!(sys::errno(&e), Some(libc::ENOENT));
        assert_eq!(at, format!("{root}\\Sub\\missing"));
    }

    #[test]
    fn the_lock_path_of_a_workspace_is_under_its_crew_root() {
        let dir = crate::test_support::TempDir::new("win-lockpath");
        let root = dir.path().to_str().unwrap().to_string();
        let ws = format!("{root}\\ws");
        std::fs::create_dir_all(format!("{ws}\\.crew\\state\\workspace-locks")).unwrap();
        std::fs::create_dir_all(format!("{ws}\\sub")).unwrap();
        let ctx = PathContext::for_cwd(&ws).unwrap();
        let got = workspace_lock_path(&format!("{ws}\\sub"), &ctx).unwrap();
        let hash = cwd_hash(Path::new(&format!("{ws}\\sub")));
        assert_eq!(
            got,
            PathBuf::from(format!("{ws}\\.crew\\state\\workspace-locks\\{hash}.lock"))
        );
    }
}
