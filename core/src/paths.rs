//! Where a workspace's lockfile lives: pi-crew's `workspaceLockPath(cwd)`, byte for byte.
//!
//! `absCwd = path.resolve(cwd)`, hashed with SHA-256; the repo root is found by walking up
//! from `realpath(absCwd)` looking for project markers, stopping at the home and temp dirs;
//! the crew root is `.crew` (or legacy `.pi/teams`) under it; the lock is
//! `crewRoot/state/workspace-locks/<hash>.lock`. Unix paths only. Nothing is cached: markers
//! may appear or vanish between calls.

use std::ffi::{CStr, OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::LockError;

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
    PathBuf::from(OsString::from_vec(normalize(&joined, true)))
}

/// Lowercase hex sha256 of the absolute cwd's UTF-8 bytes (use the raw OsStr bytes).
pub fn cwd_hash(abs_cwd: &Path) -> String {
    format!("{:x}", Sha256::digest(abs_cwd.as_os_str().as_bytes()))
}

/// findRepoRoot as above (None = no repo root).
///
/// `abs_cwd` must be absolute and normalised (what [`resolve_lexical`] returns).
pub fn find_repo_root(abs_cwd: &Path, ctx: &PathContext) -> Result<Option<PathBuf>, LockError> {
    Ok(walk_to_repo_root(abs_cwd, ctx)?.0)
}

/// `find_repo_root`, and whether the walk started from a realpath (then every directory
/// it visits, the root it finds included, is itself a realpath).
fn walk_to_repo_root(
    abs_cwd: &Path,
    ctx: &PathContext,
) -> Result<(Option<PathBuf>, bool), LockError> {
    let raw = abs_cwd.as_os_str().as_bytes();
    if raw.contains(&0) {
        // Node's fs.realpathSync rejects NUL before any syscall, with a TypeError.
        return Err(LockError::Type(format!(
            "The argument 'path' must be a string, Uint8Array, or URL without null bytes. Received {}",
            node_inspect_string(&String::from_utf8_lossy(raw))
        )));
    }
    let (start, canonical) = match fs::canonicalize(abs_cwd) {
        Ok(real) => (real, true),
        // A cwd that does not exist yet is walked lexically; its existing parents still count.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => (abs_cwd.to_path_buf(), false),
        Err(e) => return Err(LockError::io(&e, "realpath", abs_cwd)),
    };
    // Realpath'd so a symlinked home or temp dir still stops the walk; left lexical if that fails.
    let home = fs::canonicalize(&ctx.home).unwrap_or_else(|_| ctx.home.clone());
    let tmp = fs::canonicalize(&ctx.tmp).unwrap_or_else(|_| ctx.tmp.clone());
    // String equality, as in JS: no component-wise comparison.
    let is_boundary =
        |dir: &Path| dir.as_os_str() == home.as_os_str() || dir.as_os_str() == tmp.as_os_str();

    let root = Path::new("/");
    let mut current: &Path = &start;
    while current.as_os_str() != root.as_os_str() {
        if is_boundary(current) {
            return Ok((None, canonical));
        }
        if has_marker(current) {
            return Ok((Some(current.to_path_buf()), canonical));
        }
        // Lexical dirname; the path is normalised, so this is exactly Node's path.dirname.
        match current.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => current = parent,
            _ => break,
        }
    }
    if is_boundary(root) {
        return Ok((None, canonical));
    }
    Ok((has_marker(root).then(|| root.to_path_buf()), canonical))
}

/// crewRoot for a repo root.
pub fn crew_root(repo_root: &Path) -> Result<PathBuf, LockError> {
    crew_root_of(repo_root, false)
}

/// `crew_root`; `canonical` says `repo_root` is already a realpath, so that a `.crew` that
/// is a plain directory is its own realpath (no need to resolve it again).
fn crew_root_of(repo_root: &Path, canonical: bool) -> Result<PathBuf, LockError> {
    let crew = node_join(repo_root, ".crew");
    if canonical && fs::symlink_metadata(&crew).is_ok_and(|m| m.is_dir()) {
        return Ok(crew);
    }
    if exists(&crew) {
        // Existence was just seen, so a failure here is a race worth reporting.
        return fs::canonicalize(&crew).map_err(|e| LockError::io(&e, "realpath", &crew));
    }
    // Legacy layout: an existing `.pi/` hosts the crew state under `teams/`.
    let pi = node_join(repo_root, ".pi");
    if exists(&pi) {
        let real = fs::canonicalize(&pi).map_err(|e| LockError::io(&e, "realpath", &pi))?;
        return Ok(node_join(&real, "teams"));
    }
    Ok(crew)
}

/// The whole thing: workspaceLockPath(cwd).
pub fn workspace_lock_path(cwd: &str, ctx: &PathContext) -> Result<PathBuf, LockError> {
    let abs_cwd = resolve_lexical(&ctx.process_cwd, cwd);
    let dir = locks_dir_of(&abs_cwd, ctx)?;
    Ok(node_join(&dir, &format!("{}.lock", cwd_hash(&abs_cwd))))
}

fn locks_dir_of(abs_cwd: &Path, ctx: &PathContext) -> Result<PathBuf, LockError> {
    // Without a repo root the lexical cwd itself hosts `.crew`.
    let crew = match walk_to_repo_root(abs_cwd, ctx)? {
        (Some(root), canonical) => crew_root_of(&root, canonical)?,
        (None, _) => crew_root_of(abs_cwd, false)?,
    };
    Ok(node_join(&node_join(&crew, "state"), "workspace-locks"))
}

/// fs.existsSync: any stat error (ENOENT, EACCES, ELOOP, dangling link...) means absent.
fn exists(path: &Path) -> bool {
    fs::metadata(path).is_ok()
}

/// One stat per marker, stopping at the first that exists.
fn has_marker(dir: &Path) -> bool {
    MARKERS.iter().any(|m| exists(&node_join(dir, m)))
}

/// Node's posix path.join(a, b): concatenate with `/`, then normalise.
fn node_join(base: &Path, name: &str) -> PathBuf {
    let mut v = base.as_os_str().as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(name.as_bytes());
    let absolute = v.first() == Some(&b'/');
    let mut out = normalize(&v, absolute);
    if !absolute && out.is_empty() {
        out.push(b'.');
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Node's normalizeString: drop empty and `.` segments, fold `..`. A rooted result stays at
/// `/` on excess `..`; a relative one keeps them. No trailing slash (none of our callers need
/// Node's trailing-slash preservation: they end in a name).
fn normalize(path: &[u8], absolute: bool) -> Vec<u8> {
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
        None => passwd_home()
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
    *SECURE.get_or_init(read_secure_exec)
}

fn read_secure_exec() -> bool {
    // SAFETY: these calls take no arguments, touch no memory and cannot fail.
    let elevated =
        unsafe { libc::getuid() != libc::geteuid() || libc::getgid() != libc::getegid() };
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getauxval only reads the auxiliary vector; 0 means "absent".
        elevated || unsafe { libc::getauxval(libc::AT_SECURE) } != 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        elevated
    }
}

/// The home directory of the effective uid from the passwd database (libuv's
/// uv_os_get_passwd), as an errno on failure (ENOENT when there is no entry).
fn passwd_home() -> Result<OsString, i32> {
    // SAFETY: no arguments, cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut size: usize = 4096;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: passwd is plain old data; all-zero is a valid (empty) value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live, correctly sized storage owned by this frame.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        match rc {
            0 if result.is_null() || pwd.pw_dir.is_null() => return Err(libc::ENOENT),
            0 => {
                // SAFETY: on success pw_dir points to a NUL-terminated string inside `buf`.
                let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
                return Ok(OsStr::from_bytes(dir.to_bytes()).to_os_string());
            }
            libc::EINTR => {}
            // The entry did not fit: grow, within reason, like libuv does.
            libc::ERANGE if size < (1 << 20) => size *= 2,
            err => return Err(err),
        }
    }
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
        if !exists(Path::new("/.crew")) && !exists(Path::new("/.pi")) {
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
}
