//! Expected values printed by Node v20.20.2's own `path.win32` (regenerate with the
//! script in docs/platforms.md); `process.cwd()` stubbed to each cwd below.

use super::*;

fn no_drive_cwd(_: &str) -> Option<String> {
    None
}

#[test]
fn resolve_matches_node() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("C:\\work\\proj", &[], "C:\\work\\proj"),
        ("C:\\work\\proj", &["sub"], "C:\\work\\proj\\sub"),
        ("C:\\work\\proj", &["."], "C:\\work\\proj"),
        ("C:\\work\\proj", &[""], "C:\\work\\proj"),
        ("C:\\work\\proj", &[".."], "C:\\work"),
        ("C:\\work\\proj", &["../.."], "C:\\"),
        ("C:\\work\\proj", &["..\\..\\..\\.."], "C:\\"),
        (
            "C:\\work\\proj",
            &["a/b\\c//d"],
            "C:\\work\\proj\\a\\b\\c\\d",
        ),
        (
            "C:\\work\\proj",
            &["a\\.\\b\\..\\c\\"],
            "C:\\work\\proj\\a\\c",
        ),
        ("C:\\work\\proj", &["C:\\x\\y"], "C:\\x\\y"),
        ("C:\\work\\proj", &["c:\\x\\..\\..\\y"], "c:\\y"),
        ("C:\\work\\proj", &["C:"], "C:\\work\\proj"),
        (
            "C:\\work\\proj",
            &["C:rel\\dir"],
            "C:\\work\\proj\\rel\\dir",
        ),
        ("C:\\work\\proj", &["D:rel"], "D:\\rel"),
        ("C:\\work\\proj", &["d:"], "d:\\"),
        ("C:\\work\\proj", &["E:\\"], "E:\\"),
        ("C:\\work\\proj", &["E:"], "E:\\"),
        ("C:\\work\\proj", &["\\rooted\\path"], "C:\\rooted\\path"),
        ("C:\\work\\proj", &["/rooted/fwd"], "C:\\rooted\\fwd"),
        (
            "C:\\work\\proj",
            &["\\\\server\\share"],
            "\\\\server\\share\\",
        ),
        (
            "C:\\work\\proj",
            &["\\\\server\\share\\"],
            "\\\\server\\share\\",
        ),
        (
            "C:\\work\\proj",
            &["\\\\server\\share\\a\\..\\..\\b"],
            "\\\\server\\share\\b",
        ),
        (
            "C:\\work\\proj",
            &["//server/share/x"],
            "\\\\server\\share\\x",
        ),
        (
            "C:\\work\\proj",
            &["\\\\?\\C:\\long\\path"],
            "\\\\?\\C:\\long\\path",
        ),
        (
            "C:\\work\\proj",
            &["\\\\.\\pipe\\name"],
            "\\\\.\\pipe\\name",
        ),
        ("C:\\work\\proj", &["C:\\a", "b", "..\\c"], "C:\\a\\c"),
        ("C:\\work\\proj", &["C:\\a", "D:b"], "D:\\b"),
        ("C:\\work\\proj", &["x", "C:\\abs", "rel"], "C:\\abs\\rel"),
        (
            "C:\\work\\proj",
            &["C:\\tmp\\", ".crew\\"],
            "C:\\tmp\\.crew",
        ),
        ("C:\\work\\proj", &["C:\\trailing\\\\\\"], "C:\\trailing"),
        ("C:\\work\\proj", &["é\\ü\\..\\ß"], "C:\\work\\proj\\é\\ß"),
        (
            "C:\\work\\proj",
            &["C:\\a b\\c.d\\..e\\..."],
            "C:\\a b\\c.d\\..e\\...",
        ),
        ("c:\\Users\\Ann\\src", &[], "c:\\Users\\Ann\\src"),
        ("c:\\Users\\Ann\\src", &["sub"], "c:\\Users\\Ann\\src\\sub"),
        ("c:\\Users\\Ann\\src", &["."], "c:\\Users\\Ann\\src"),
        ("c:\\Users\\Ann\\src", &[""], "c:\\Users\\Ann\\src"),
        ("c:\\Users\\Ann\\src", &[".."], "c:\\Users\\Ann"),
        ("c:\\Users\\Ann\\src", &["../.."], "c:\\Users"),
        ("c:\\Users\\Ann\\src", &["..\\..\\..\\.."], "c:\\"),
        (
            "c:\\Users\\Ann\\src",
            &["a/b\\c//d"],
            "c:\\Users\\Ann\\src\\a\\b\\c\\d",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["a\\.\\b\\..\\c\\"],
            "c:\\Users\\Ann\\src\\a\\c",
        ),
        ("c:\\Users\\Ann\\src", &["C:\\x\\y"], "C:\\x\\y"),
        ("c:\\Users\\Ann\\src", &["c:\\x\\..\\..\\y"], "c:\\y"),
        ("c:\\Users\\Ann\\src", &["C:"], "C:\\Users\\Ann\\src"),
        (
            "c:\\Users\\Ann\\src",
            &["C:rel\\dir"],
            "C:\\Users\\Ann\\src\\rel\\dir",
        ),
        ("c:\\Users\\Ann\\src", &["D:rel"], "D:\\rel"),
        ("c:\\Users\\Ann\\src", &["d:"], "d:\\"),
        ("c:\\Users\\Ann\\src", &["E:\\"], "E:\\"),
        ("c:\\Users\\Ann\\src", &["E:"], "E:\\"),
        (
            "c:\\Users\\Ann\\src",
            &["\\rooted\\path"],
            "c:\\rooted\\path",
        ),
        ("c:\\Users\\Ann\\src", &["/rooted/fwd"], "c:\\rooted\\fwd"),
        (
            "c:\\Users\\Ann\\src",
            &["\\\\server\\share"],
            "\\\\server\\share\\",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["\\\\server\\share\\"],
            "\\\\server\\share\\",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["\\\\server\\share\\a\\..\\..\\b"],
            "\\\\server\\share\\b",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["//server/share/x"],
            "\\\\server\\share\\x",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["\\\\?\\C:\\long\\path"],
            "\\\\?\\C:\\long\\path",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["\\\\.\\pipe\\name"],
            "\\\\.\\pipe\\name",
        ),
        ("c:\\Users\\Ann\\src", &["C:\\a", "b", "..\\c"], "C:\\a\\c"),
        ("c:\\Users\\Ann\\src", &["C:\\a", "D:b"], "D:\\b"),
        (
            "c:\\Users\\Ann\\src",
            &["x", "C:\\abs", "rel"],
            "C:\\abs\\rel",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["C:\\tmp\\", ".crew\\"],
            "C:\\tmp\\.crew",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["C:\\trailing\\\\\\"],
            "C:\\trailing",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["é\\ü\\..\\ß"],
            "c:\\Users\\Ann\\src\\é\\ß",
        ),
        (
            "c:\\Users\\Ann\\src",
            &["C:\\a b\\c.d\\..e\\..."],
            "C:\\a b\\c.d\\..e\\...",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &[],
            "\\\\srv\\share\\team\\repo",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["sub"],
            "\\\\srv\\share\\team\\repo\\sub",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["."],
            "\\\\srv\\share\\team\\repo",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &[""],
            "\\\\srv\\share\\team\\repo",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &[".."],
            "\\\\srv\\share\\team",
        ),
        ("\\\\srv\\share\\team\\repo", &["../.."], "\\\\srv\\share\\"),
        (
            "\\\\srv\\share\\team\\repo",
            &["..\\..\\..\\.."],
            "\\\\srv\\share\\",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["a/b\\c//d"],
            "\\\\srv\\share\\team\\repo\\a\\b\\c\\d",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["a\\.\\b\\..\\c\\"],
            "\\\\srv\\share\\team\\repo\\a\\c",
        ),
        ("\\\\srv\\share\\team\\repo", &["C:\\x\\y"], "C:\\x\\y"),
        ("\\\\srv\\share\\team\\repo", &["c:\\x\\..\\..\\y"], "c:\\y"),
        ("\\\\srv\\share\\team\\repo", &["C:"], "C:"),
        ("\\\\srv\\share\\team\\repo", &["C:rel\\dir"], "C:rel\\dir"),
        ("\\\\srv\\share\\team\\repo", &["D:rel"], "D:rel"),
        ("\\\\srv\\share\\team\\repo", &["d:"], "d:"),
        ("\\\\srv\\share\\team\\repo", &["E:\\"], "E:\\"),
        ("\\\\srv\\share\\team\\repo", &["E:"], "E:"),
        (
            "\\\\srv\\share\\team\\repo",
            &["\\rooted\\path"],
            "\\\\srv\\share\\rooted\\path",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["/rooted/fwd"],
            "\\\\srv\\share\\rooted\\fwd",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["\\\\server\\share"],
            "\\\\server\\share\\",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["\\\\server\\share\\"],
            "\\\\server\\share\\",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["\\\\server\\share\\a\\..\\..\\b"],
            "\\\\server\\share\\b",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["//server/share/x"],
            "\\\\server\\share\\x",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["\\\\?\\C:\\long\\path"],
            "\\\\?\\C:\\long\\path",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["\\\\.\\pipe\\name"],
            "\\\\.\\pipe\\name",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["C:\\a", "b", "..\\c"],
            "C:\\a\\c",
        ),
        ("\\\\srv\\share\\team\\repo", &["C:\\a", "D:b"], "D:b"),
        (
            "\\\\srv\\share\\team\\repo",
            &["x", "C:\\abs", "rel"],
            "C:\\abs\\rel",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["C:\\tmp\\", ".crew\\"],
            "C:\\tmp\\.crew",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["C:\\trailing\\\\\\"],
            "C:\\trailing",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["é\\ü\\..\\ß"],
            "\\\\srv\\share\\team\\repo\\é\\ß",
        ),
        (
            "\\\\srv\\share\\team\\repo",
            &["C:\\a b\\c.d\\..e\\..."],
            "C:\\a b\\c.d\\..e\\...",
        ),
        ("D:\\", &[], "D:\\"),
        ("D:\\", &["sub"], "D:\\sub"),
        ("D:\\", &["."], "D:\\"),
        ("D:\\", &[""], "D:\\"),
        ("D:\\", &[".."], "D:\\"),
        ("D:\\", &["../.."], "D:\\"),
        ("D:\\", &["..\\..\\..\\.."], "D:\\"),
        ("D:\\", &["a/b\\c//d"], "D:\\a\\b\\c\\d"),
        ("D:\\", &["a\\.\\b\\..\\c\\"], "D:\\a\\c"),
        ("D:\\", &["C:\\x\\y"], "C:\\x\\y"),
        ("D:\\", &["c:\\x\\..\\..\\y"], "c:\\y"),
        ("D:\\", &["C:"], "C:\\"),
        ("D:\\", &["C:rel\\dir"], "C:\\rel\\dir"),
        ("D:\\", &["D:rel"], "D:\\rel"),
        ("D:\\", &["d:"], "d:\\"),
        ("D:\\", &["E:\\"], "E:\\"),
        ("D:\\", &["E:"], "E:\\"),
        ("D:\\", &["\\rooted\\path"], "D:\\rooted\\path"),
        ("D:\\", &["/rooted/fwd"], "D:\\rooted\\fwd"),
        ("D:\\", &["\\\\server\\share"], "\\\\server\\share\\"),
        ("D:\\", &["\\\\server\\share\\"], "\\\\server\\share\\"),
        (
            "D:\\",
            &["\\\\server\\share\\a\\..\\..\\b"],
            "\\\\server\\share\\b",
        ),
        ("D:\\", &["//server/share/x"], "\\\\server\\share\\x"),
        ("D:\\", &["\\\\?\\C:\\long\\path"], "\\\\?\\C:\\long\\path"),
        ("D:\\", &["\\\\.\\pipe\\name"], "\\\\.\\pipe\\name"),
        ("D:\\", &["C:\\a", "b", "..\\c"], "C:\\a\\c"),
        ("D:\\", &["C:\\a", "D:b"], "D:\\b"),
        ("D:\\", &["x", "C:\\abs", "rel"], "C:\\abs\\rel"),
        ("D:\\", &["C:\\tmp\\", ".crew\\"], "C:\\tmp\\.crew"),
        ("D:\\", &["C:\\trailing\\\\\\"], "C:\\trailing"),
        ("D:\\", &["é\\ü\\..\\ß"], "D:\\é\\ß"),
        (
            "D:\\",
            &["C:\\a b\\c.d\\..e\\..."],
            "C:\\a b\\c.d\\..e\\...",
        ),
    ];
    for (cwd, args, want) in cases {
        assert_eq!(
            resolve(args, cwd, &no_drive_cwd),
            *want,
            "resolve({args:?}) in {cwd}"
        );
    }
}

#[test]
fn join_and_dirname_match_node() {
    let joins: &[(&str, &[&str], &str)] = &[
        ("C:\\", &[], "C:\\"),
        ("C:\\", &[".crew"], "C:\\.crew"),
        (
            "C:\\",
            &[".crew", "state", "workspace-locks"],
            "C:\\.crew\\state\\workspace-locks",
        ),
        ("C:\\", &["x.lock"], "C:\\x.lock"),
        ("C:\\", &[".."], "C:\\"),
        ("C:\\", &[".pi", "teams"], "C:\\.pi\\teams"),
        ("C:\\work", &[], "C:\\work"),
        ("C:\\work", &[".crew"], "C:\\work\\.crew"),
        (
            "C:\\work",
            &[".crew", "state", "workspace-locks"],
            "C:\\work\\.crew\\state\\workspace-locks",
        ),
        ("C:\\work", &["x.lock"], "C:\\work\\x.lock"),
        ("C:\\work", &[".."], "C:\\"),
        ("C:\\work", &[".pi", "teams"], "C:\\work\\.pi\\teams"),
        ("c:\\work\\", &[], "c:\\work\\"),
        ("c:\\work\\", &[".crew"], "c:\\work\\.crew"),
        (
            "c:\\work\\",
            &[".crew", "state", "workspace-locks"],
            "c:\\work\\.crew\\state\\workspace-locks",
        ),
        ("c:\\work\\", &["x.lock"], "c:\\work\\x.lock"),
        ("c:\\work\\", &[".."], "c:\\"),
        ("c:\\work\\", &[".pi", "teams"], "c:\\work\\.pi\\teams"),
        ("\\\\srv\\share", &[], "\\\\srv\\share\\"),
        ("\\\\srv\\share", &[".crew"], "\\\\srv\\share\\.crew"),
        (
            "\\\\srv\\share",
            &[".crew", "state", "workspace-locks"],
            "\\\\srv\\share\\.crew\\state\\workspace-locks",
        ),
        ("\\\\srv\\share", &["x.lock"], "\\\\srv\\share\\x.lock"),
        ("\\\\srv\\share", &[".."], "\\\\srv\\share\\"),
        (
            "\\\\srv\\share",
            &[".pi", "teams"],
            "\\\\srv\\share\\.pi\\teams",
        ),
        ("\\\\srv\\share\\", &[], "\\\\srv\\share\\"),
        ("\\\\srv\\share\\", &[".crew"], "\\\\srv\\share\\.crew"),
        (
            "\\\\srv\\share\\",
            &[".crew", "state", "workspace-locks"],
            "\\\\srv\\share\\.crew\\state\\workspace-locks",
        ),
        ("\\\\srv\\share\\", &["x.lock"], "\\\\srv\\share\\x.lock"),
        ("\\\\srv\\share\\", &[".."], "\\\\srv\\share\\"),
        (
            "\\\\srv\\share\\",
            &[".pi", "teams"],
            "\\\\srv\\share\\.pi\\teams",
        ),
        ("\\\\srv\\share\\a", &[], "\\\\srv\\share\\a"),
        ("\\\\srv\\share\\a", &[".crew"], "\\\\srv\\share\\a\\.crew"),
        (
            "\\\\srv\\share\\a",
            &[".crew", "state", "workspace-locks"],
            "\\\\srv\\share\\a\\.crew\\state\\workspace-locks",
        ),
        (
            "\\\\srv\\share\\a",
            &["x.lock"],
            "\\\\srv\\share\\a\\x.lock",
        ),
        ("\\\\srv\\share\\a", &[".."], "\\\\srv\\share\\"),
        (
            "\\\\srv\\share\\a",
            &[".pi", "teams"],
            "\\\\srv\\share\\a\\.pi\\teams",
        ),
        ("C:\\a\\..\\b", &[], "C:\\b"),
        ("C:\\a\\..\\b", &[".crew"], "C:\\b\\.crew"),
        (
            "C:\\a\\..\\b",
            &[".crew", "state", "workspace-locks"],
            "C:\\b\\.crew\\state\\workspace-locks",
        ),
        ("C:\\a\\..\\b", &["x.lock"], "C:\\b\\x.lock"),
        ("C:\\a\\..\\b", &[".."], "C:\\"),
        ("C:\\a\\..\\b", &[".pi", "teams"], "C:\\b\\.pi\\teams"),
        ("\\rooted", &[], "\\rooted"),
        ("\\rooted", &[".crew"], "\\rooted\\.crew"),
        (
            "\\rooted",
            &[".crew", "state", "workspace-locks"],
            "\\rooted\\.crew\\state\\workspace-locks",
        ),
        ("\\rooted", &["x.lock"], "\\rooted\\x.lock"),
        ("\\rooted", &[".."], "\\"),
        ("\\rooted", &[".pi", "teams"], "\\rooted\\.pi\\teams"),
    ];
    for (base, names, want) in joins {
        assert_eq!(join(base, names), *want, "join({base}, {names:?})");
    }
    let dirnames: &[(&str, &str)] = &[
        ("C:\\", "C:\\"),
        ("C:\\a", "C:\\"),
        ("C:\\a\\b", "C:\\a"),
        ("C:\\a\\b\\", "C:\\a"),
        ("C:", "C:"),
        ("C:a", "C:"),
        ("\\\\srv\\share", "\\\\srv\\share"),
        ("\\\\srv\\share\\", "\\\\srv\\share\\"),
        ("\\\\srv\\share\\a", "\\\\srv\\share\\"),
        ("\\\\srv\\share\\a\\b", "\\\\srv\\share\\a"),
        ("\\", "\\"),
        ("\\a", "\\"),
        ("\\\\?\\C:\\x", "\\\\?\\C:\\"),
        ("\\\\.\\pipe\\n", "\\\\.\\pipe\\"),
    ];
    for (path, want) in dirnames {
        assert_eq!(dirname(path), *want, "dirname({path})");
    }
    let normals: &[(&str, &str)] = &[
        ("C:\\a\\..\\..\\b", "C:\\b"),
        ("C:/x//y/", "C:\\x\\y\\"),
        ("\\\\srv\\share", "\\\\srv\\share\\"),
        ("\\\\srv\\share\\..\\x", "\\\\srv\\share\\x"),
        ("/", "\\"),
        ("\\", "\\"),
        ("C:\\", "C:\\"),
        ("//srv/share/a/./b", "\\\\srv\\share\\a\\b"),
    ];
    for (path, want) in normals {
        assert_eq!(normalize_rooted(path), *want, "normalize({path})");
    }
}

/// Node's win32 resolve takes a drive-relative path against that drive's own cwd
/// (`process.env["=D:"]`), or the drive's root when that is unset or names another drive.
#[test]
fn drive_relative_paths_use_the_drives_own_cwd() {
    let drive_cwd = |d: &str| match d {
        "D:" => Some("D:\\dcwd\\x".to_string()),
        "E:" => Some("C:\\elsewhere".to_string()),
        _ => None,
    };
    let cwd = "C:\\work";
    assert_eq!(resolve(&["D:rel"], cwd, &drive_cwd), "D:\\dcwd\\x\\rel");
    assert_eq!(resolve(&["d:rel"], cwd, &drive_cwd), "d:\\rel");
    assert_eq!(resolve(&["E:rel"], cwd, &drive_cwd), "E:\\rel");
    assert_eq!(resolve(&["F:rel"], cwd, &drive_cwd), "F:\\rel");
    assert_eq!(resolve(&["C:rel"], cwd, &drive_cwd), "C:\\work\\rel");
}

/// os.tmpdir() and os.homedir() on Windows, from Node's lib/os.js and libuv's
/// uv_os_homedir.
#[test]
fn tmpdir_and_homedir_follow_node_on_windows() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(
        tmpdir(&env(&[("TEMP", "C:\\T\\"), ("TMP", "D:\\x")])),
        "C:\\T"
    );
    assert_eq!(tmpdir(&env(&[("TEMP", ""), ("TMP", "D:\\x")])), "D:\\x");
    assert_eq!(tmpdir(&env(&[("TEMP", "C:\\")])), "C:\\");
    assert_eq!(
        tmpdir(&env(&[("SystemRoot", "C:\\Windows")])),
        "C:\\Windows\\temp"
    );
    assert_eq!(tmpdir(&env(&[("windir", "C:\\Win")])), "C:\\Win\\temp");
    assert_eq!(tmpdir(&env(&[])), "undefined\\temp");
    let profile = || Some("C:\\Users\\fallback".to_string());
    assert_eq!(
        homedir(&env(&[("USERPROFILE", "C:\\Users\\ann")]), &profile).as_deref(),
        Some("C:\\Users\\ann")
    );
    assert_eq!(
        homedir(&env(&[]), &profile).as_deref(),
        Some("C:\\Users\\fallback")
    );
}

#[test]
fn roots_are_where_the_walk_stops() {
    for root in ["C:\\", "\\\\srv\\share\\", "\\\\srv\\share", "\\"] {
        assert!(is_root(root), "{root}");
    }
    for not_root in ["C:\\a", "\\\\srv\\share\\a", "\\a"] {
        assert!(!is_root(not_root), "{not_root}");
    }
}
