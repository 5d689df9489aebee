//! Names what the platform layer (`src/sys`) offers on the target, for tests that need it:
//! `kernel_locks` (byte locks owned by an open file or handle), `dir_watch`
//! (directory-change events), `pid_watch` (process-exit handles), `symlink_free_open` (one
//! open refusing every symlink). Linux has them all, unless the `generic-unix` feature asks
//! for the portable Unix layer that macOS runs, which has kernel locks (`flock` on one file
//! per byte); Windows has byte locks (`LockFileEx`) and exit handles.
fn main() {
    const ALL: [&str; 4] = [
        "kernel_locks",
        "dir_watch",
        "pid_watch",
        "symlink_free_open",
    ];
    // The generic layer's kernel locks are files in a directory, which go with it.
    println!("cargo::rustc-check-cfg=cfg(owners_directory)");
    for cfg in ALL {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let generic = std::env::var_os("CARGO_FEATURE_GENERIC_UNIX").is_some();
    let offered: &[&str] = match os.as_str() {
        "linux" if !generic => &ALL,
        "windows" => &["kernel_locks", "dir_watch", "pid_watch"],
        _ => {
            println!("cargo::rustc-cfg=owners_directory");
            &["kernel_locks"]
        }
    };
    for cfg in offered {
        println!("cargo::rustc-cfg={cfg}");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
