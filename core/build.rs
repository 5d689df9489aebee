//! Names what the platform layer (`src/sys`) offers on the target, for tests that need it:
//! `kernel_locks` (byte locks owned by an open file), `dir_watch` (directory-change events),
//! `pid_watch` (process-exit handles), `symlink_free_open` (one open refusing every
//! symlink). Linux has them all, unless the `generic-unix` feature asks for the portable
//! Unix layer that macOS runs.
fn main() {
    for cfg in [
        "kernel_locks",
        "dir_watch",
        "pid_watch",
        "symlink_free_open",
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let generic = std::env::var_os("CARGO_FEATURE_GENERIC_UNIX").is_some();
    if os == "linux" && !generic {
        for cfg in [
            "kernel_locks",
            "dir_watch",
            "pid_watch",
            "symlink_free_open",
        ] {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-changed=build.rs");
}
