//! Node's path semantics, byte for byte: `path.resolve`, `path.join` and normalisation
//! (posix), `os.homedir()`, `os.tmpdir()` and `util.inspect` of a string as its errors
//! print it.

#[cfg(unix)]
use super::*;

/// Node's posix path.resolve(base, p) where base is absolute.
#[cfg(unix)]
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

/// Node's posix path.join(a, b): concatenate with `/`, then normalise.
#[cfg(unix)]
pub(super) fn node_join(base: &Path, name: &str) -> PathBuf {
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
#[cfg(unix)]
pub(super) fn is_normal_rooted(path: &[u8]) -> bool {
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
#[cfg(unix)]
pub(super) fn normalize(path: Vec<u8>, absolute: bool) -> Vec<u8> {
    // A clean name joined to a clean absolute path (every join on the way to a lock path)
    // needs no rewriting.
    if is_normal_rooted(&path) {
        return path;
    }
    fold_segments(&path, absolute)
}

/// [`normalize`] the long way, segment by segment.
#[cfg(unix)]
pub(super) fn fold_segments(path: &[u8], absolute: bool) -> Vec<u8> {
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
#[cfg(unix)]
pub(super) fn lossy(s: &OsStr) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// os.homedir() as libuv computes it: `$HOME` whenever it is set (even empty: libuv only falls
/// back when getenv returns NULL), else the passwd entry of the effective uid.
#[cfg(unix)]
pub(super) fn node_homedir(getenv: impl Fn(&str) -> Option<OsString>) -> Result<String, LockError> {
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
#[cfg(unix)]
pub(super) fn node_tmpdir(getenv: impl Fn(&str) -> Option<OsString>, secure: bool) -> String {
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
#[cfg(unix)]
pub(super) fn secure_exec() -> bool {
    static SECURE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SECURE.get_or_init(sys::secure_exec)
}

/// util.inspect of a string, as Node's ERR_INVALID_ARG_VALUE prints it: the first quote kind
/// not in the string, control characters and backslashes escaped, cut at 128 characters.
pub(super) fn node_inspect_string(s: &str) -> String {
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
