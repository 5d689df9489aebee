//! The pi-crew workspace lock, in pure Rust: where the lockfile lives, its bytes, who is
//! alive, and the claim / reclaim / refresh / release protocol. Nothing here knows napi.

pub mod error;
pub mod held_lock;
pub mod host;
pub mod js_semantics;
pub mod kernel_lock;
pub mod liveness;
pub mod lockfile_io;
pub mod paths;
pub mod process_probe;
pub mod protocol;
pub mod record;
pub mod sys;
#[cfg(test)]
pub(crate) mod test_support;
pub mod waiting;
