//! Names what the platform layer (`src/sys`) offers on the target, for tests that need it:
//! `kernel_locks` (byte locks owned by an open file or handle), `dir_watch`
//! (directory-change events), `pid_watch` (process-exit handles), `symlink_free_open` (one
//! open refusing every symlink). Linux has them all, unless the `generic-unix` feature asks
//! for the portable Unix layer that macOS runs; Windows has byte locks (`LockFileEx`) and
//! exit handles.
fn main() {
    const ALL: [&str; 4] = [
        "kernel_locks",
        "dir_watch",
        "pid_watch",
        "symlink_free_open",
    ];
    for cfg in ALL {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let generic = std::env::var_os("CARGO_FEATURE_GENERIC_UNIX").is_some();
    let offered: &[&str] = match os.as_str() {
        "linux" if !generic => &ALL,
        "windows" => &["kernel_locks", "dir_watch", "pid_watch"],
        _ => &[],
    };
    for cfg in offered {
        println!("cargo::rustc-cfg={cfg}");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
