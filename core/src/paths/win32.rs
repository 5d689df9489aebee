//! Node's `path.win32` semantics, `os.homedir()` and `os.tmpdir()` on Windows, as pure
//! functions of their inputs (the process's cwd, the drive cwds and the environment passed
//! in), so that they are tested on every platform against Node's own outputs. Ported line by
//! line from Node's `lib/path.js` and `lib/os.js`; byte indices stand for UTF-16 ones, which
//! is exact here because every character the algorithms look at is ASCII.

fn is_sep(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

fn is_device_root(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

/// Node's `normalizeString(path, allowAboveRoot, '\\', isPathSeparator)`.
pub fn normalize_string(path: &str, allow_above_root: bool) -> String {
    let bytes = path.as_bytes();
    let mut res = String::new();
    let mut last_segment_length = 0usize;
    let mut last_slash: isize = -1;
    let mut dots: i32 = 0;
    let mut code = 0u8;
    let mut i = 0usize;
    while i <= bytes.len() {
        if i < bytes.len() {
            code = bytes[i];
        } else if is_sep(code) {
            break;
        } else {
            code = b'/';
        }
        if is_sep(code) {
            if last_slash == i as isize - 1 || dots == 1 {
                // NOOP
            } else if dots == 2 {
                let ends_in_dots =
                    res.len() >= 2 && last_segment_length == 2 && res.ends_with("..");
                if !ends_in_dots {
                    if res.len() > 2 {
                        match res.rfind('\\') {
                            None => {
                                res.clear();
                                last_segment_length = 0;
                            }
                            Some(at) => {
                                res.truncate(at);
                                last_segment_length = match res.rfind('\\') {
                                    Some(p) => res.len() - 1 - p,
                                    None => res.len(),
                                };
                            }
                        }
                        last_slash = i as isize;
                        dots = 0;
                        i += 1;
                        continue;
                    } else if !res.is_empty() {
                        res.clear();
                        last_segment_length = 0;
                        last_slash = i as isize;
                        dots = 0;
                        i += 1;
                        continue;
                    }
                }
                if allow_above_root {
                    res.push_str(if res.is_empty() { ".." } else { "\\.." });
                    last_segment_length = 2;
                }
            } else {
                let segment = &path[(last_slash + 1) as usize..i];
                if !res.is_empty() {
                    res.push('\\');
                }
                res.push_str(segment);
                last_segment_length = i - (last_slash + 1) as usize;
            }
            last_slash = i as isize;
            dots = 0;
        } else if code == b'.' && dots != -1 {
            dots += 1;
        } else {
            dots = -1;
        }
        i += 1;
    }
    res
}

/// A path's root as Node's win32 functions parse it: the device (`C:`, `\\\\server\\share`,
/// `\\\\.`), where the rest starts, whether it is absolute.
struct Root {
    device: Option<String>,
    end: usize,
    absolute: bool,
}

/// The root parse shared by `resolve` and `normalize` (without `normalize`'s reserved names).
fn parse_root(path: &str) -> Root {
    let b = path.as_bytes();
    let len = b.len();
    let mut root = Root {
        device: None,
        end: 0,
        absolute: false,
    };
    if len == 0 {
        return root;
    }
    if len == 1 {
        if is_sep(b[0]) {
            root.end = 1;
            root.absolute = true;
        }
        return root;
    }
    if is_sep(b[0]) {
        root.absolute = true;
        if is_sep(b[1]) {
            let mut j = 2;
            let mut last = j;
            while j < len && !is_sep(b[j]) {
                j += 1;
            }
            if j < len && j != last {
                let first_part = &path[last..j];
                last = j;
                while j < len && is_sep(b[j]) {
                    j += 1;
                }
                if j < len && j != last {
                    last = j;
                    while j < len && !is_sep(b[j]) {
                        j += 1;
                    }
                    if j == len || j != last {
                        if first_part != "." && first_part != "?" {
                            root.device = Some(format!("\\\\{first_part}\\{}", &path[last..j]));
                            root.end = j;
                        } else {
                            root.device = Some(format!("\\\\{first_part}"));
                            root.end = 4;
                        }
                    }
                }
            }
        } else {
            root.end = 1;
        }
    } else if is_device_root(b[0]) && b[1] == b':' {
        root.device = Some(path[..2].to_string());
        root.end = 2;
        if len > 2 && is_sep(b[2]) {
            root.absolute = true;
            root.end = 3;
        }
    }
    root
}

/// `path.win32.resolve(...args)` in a process whose `process.cwd()` is `cwd`, where
/// `drive_cwd("C:")` is `process.env["=C:"]` (the drive's own cwd, set by cmd.exe).
pub fn resolve(args: &[&str], cwd: &str, drive_cwd: &dyn Fn(&str) -> Option<String>) -> String {
    let mut resolved_device = String::new();
    let mut resolved_tail = String::new();
    let mut resolved_absolute = false;
    let mut i = args.len() as isize - 1;
    while i >= -1 {
        let path: String = if i >= 0 {
            let arg = args[i as usize];
            if arg.is_empty() {
                i -= 1;
                continue;
            }
            arg.to_string()
        } else if resolved_device.is_empty() {
            cwd.to_string()
        } else {
            let found = drive_cwd(&resolved_device)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| cwd.to_string());
            let prefix = found.get(..2).unwrap_or(found.as_str()).to_lowercase();
            if prefix != resolved_device.to_lowercase() && found.as_bytes().get(2) == Some(&b'\\') {
                format!("{resolved_device}\\")
            } else {
                found
            }
        };
        let root = parse_root(&path);
        if let Some(device) = &root.device {
            if !resolved_device.is_empty() {
                if device.to_lowercase() != resolved_device.to_lowercase() {
                    // This path points to another device, so it is not applicable.
                    i -= 1;
                    continue;
                }
            } else {
                resolved_device = device.clone();
            }
        }
        if resolved_absolute {
            if !resolved_device.is_empty() {
                break;
            }
        } else {
            resolved_tail = format!("{}\\{resolved_tail}", &path[root.end..]);
            resolved_absolute = root.absolute;
            if root.absolute && !resolved_device.is_empty() {
                break;
            }
        }
        i -= 1;
    }
    let tail = normalize_string(&resolved_tail, !resolved_absolute);
    if resolved_absolute {
        format!("{resolved_device}\\{tail}")
    } else {
        let joined = format!("{resolved_device}{tail}");
        if joined.is_empty() {
            ".".to_string()
        } else {
            joined
        }
    }
}

/// `path.win32.normalize(path)` for a path with a root (what [`resolve`] returns joined
/// with names): drive-absolute, UNC or rooted. Relative paths never reach it here.
pub fn normalize_rooted(path: &str) -> String {
    let b = path.as_bytes();
    let len = b.len();
    if len == 0 {
        return ".".to_string();
    }
    if len == 1 {
        return if b[0] == b'/' {
            "\\".to_string()
        } else {
            path.to_string()
        };
    }
    let root = parse_root(path);
    // A UNC root alone is returned with a trailing separator.
    if let Some(device) = &root.device {
        if device.starts_with("\\\\")
            && root.end == len
            && !device.ends_with('.')
            && !device.ends_with('?')
        {
            return format!("{device}\\");
        }
    }
    let mut tail = if root.end < len {
        normalize_string(&path[root.end..], !root.absolute)
    } else {
        String::new()
    };
    if tail.is_empty() && !root.absolute {
        tail = ".".to_string();
    }
    if !tail.is_empty() && is_sep(b[len - 1]) {
        tail.push('\\');
    }
    match (&root.device, root.absolute) {
        (None, true) => format!("\\{tail}"),
        (None, false) => tail,
        (Some(device), true) => format!("{device}\\{tail}"),
        (Some(device), false) => format!("{device}{tail}"),
    }
}

/// `path.win32.join(base, ...names)` for a rooted `base` and plain names.
pub fn join(base: &str, names: &[&str]) -> String {
    let mut joined = String::new();
    let mut first: Option<&str> = None;
    for part in std::iter::once(&base).chain(names.iter()) {
        if part.is_empty() {
            continue;
        }
        if first.is_none() {
            first = Some(part);
            joined.push_str(part);
        } else {
            joined.push('\\');
            joined.push_str(part);
        }
    }
    let Some(first) = first else {
        return ".".to_string();
    };
    let fb = first.as_bytes();
    let mut needs_replace = true;
    let mut slash_count = 0usize;
    if fb.first().copied().is_some_and(is_sep) {
        slash_count += 1;
        if fb.len() > 1 && is_sep(fb[1]) {
            slash_count += 1;
            if fb.len() > 2 {
                if is_sep(fb[2]) {
                    slash_count += 1;
                } else {
                    needs_replace = false;
                }
            }
        }
    }
    if needs_replace {
        let jb = joined.as_bytes();
        while slash_count < jb.len() && is_sep(jb[slash_count]) {
            slash_count += 1;
        }
        if slash_count >= 2 {
            joined = format!("\\{}", &joined[slash_count..]);
        }
    }
    normalize_rooted(&joined)
}

/// `path.win32.dirname(path)`.
pub fn dirname(path: &str) -> String {
    let b = path.as_bytes();
    let len = b.len();
    if len == 0 {
        return ".".to_string();
    }
    if len == 1 {
        return if is_sep(b[0]) {
            path.to_string()
        } else {
            ".".to_string()
        };
    }
    let mut root_end: isize = -1;
    let mut offset = 0usize;
    if is_sep(b[0]) {
        root_end = 1;
        offset = 1;
        if is_sep(b[1]) {
            let mut j = 2;
            let mut last = j;
            while j < len && !is_sep(b[j]) {
                j += 1;
            }
            if j < len && j != last {
                last = j;
                while j < len && is_sep(b[j]) {
                    j += 1;
                }
                if j < len && j != last {
                    last = j;
                    while j < len && !is_sep(b[j]) {
                        j += 1;
                    }
                    if j == len {
                        return path.to_string();
                    }
                    if j != last {
                        root_end = (j + 1) as isize;
                        offset = j + 1;
                    }
                }
            }
        }
    } else if is_device_root(b[0]) && b[1] == b':' {
        root_end = if len > 2 && is_sep(b[2]) { 3 } else { 2 };
        offset = root_end as usize;
    }
    let mut end: isize = -1;
    let mut matched_slash = true;
    let mut i = len;
    while i > offset {
        i -= 1;
        if is_sep(b[i]) {
            if !matched_slash {
                end = i as isize;
                break;
            }
        } else {
            matched_slash = false;
        }
    }
    if end == -1 {
        if root_end == -1 {
            return ".".to_string();
        }
        end = root_end;
    }
    path[..end as usize].to_string()
}

/// `os.tmpdir()` on Windows: `TEMP`, else `TMP`, else `SystemRoot` (or `windir`) + `\\temp`
/// (`undefined\\temp` without either, as Node prints it); one trailing `\\` dropped unless
/// it follows a drive's colon.
pub fn tmpdir(getenv: &dyn Fn(&str) -> Option<String>) -> String {
    let set = |name: &str| getenv(name).filter(|v| !v.is_empty());
    let path = set("TEMP").or_else(|| set("TMP")).unwrap_or_else(|| {
        let system = set("SystemRoot")
            .or_else(|| set("windir"))
            .unwrap_or_else(|| "undefined".to_string());
        format!("{system}\\temp")
    });
    if path.len() > 1 && path.ends_with('\\') && !path.ends_with(":\\") {
        path[..path.len() - 1].to_string()
    } else {
        path
    }
}

/// `os.homedir()` on Windows (libuv's `uv_os_homedir`): `USERPROFILE` whenever it is set,
/// else the user's profile directory from the system (`profile`).
pub fn homedir(
    getenv: &dyn Fn(&str) -> Option<String>,
    profile: &dyn Fn() -> Option<String>,
) -> Option<String> {
    getenv("USERPROFILE").or_else(profile)
}

/// The folder the repo-root walk stops at: the path's own root (`C:\\`, `\\\\server\\share\\`),
/// where `dirname` returns the path itself.
pub fn is_root(path: &str) -> bool {
    dirname(path) == path
}

#[cfg(test)]
mod tests;
