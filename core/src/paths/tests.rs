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
