//! This process's host identity, read once: hostname, kernel boot and PID namespace.

use crate::record::HostIdentity;
use crate::sys;
use std::sync::OnceLock;

pub fn host_identity() -> &'static HostIdentity {
    static IDENTITY: OnceLock<HostIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let pid = crate::process_probe::own_pid();
        HostIdentity {
            hostname: sys::hostname(),
            boot_id: sys::boot_id(),
            pid_namespace: sys::pid_namespace(),
            // Where the record's startTime says nothing (no /proc start times).
            process: crate::process_probe::start_time_of(&pid.to_string())
                .is_none()
                .then(|| i32::try_from(pid).ok().and_then(sys::process_start))
                .flatten()
                .map(|start| (pid, start)),
        }
    })
}

/// Where a record's holder runs, relative to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    /// Same kernel boot and PID namespace (or a record of the original, which has no host
    /// fields): its pid means what it says here.
    SamePidNamespace,
    /// Same kernel boot, another PID namespace (another container): kernel locks are
    /// shared, pids are not.
    SameKernel,
    /// Another machine, or a kernel boot we cannot match: only the heartbeat counts.
    Elsewhere,
}

pub fn locality_of(record: &crate::record::ParsedRecord) -> Locality {
    if !record.has_host_fields() {
        return Locality::SamePidNamespace;
    }
    let me = host_identity();
    let same_kernel = match (record.boot_id(), me.boot_id.as_deref()) {
        (Some(theirs), Some(ours)) => theirs == ours,
        // Without boot ids (not Linux) the hostname is the best we have.
        _ => record.hostname() == Some(me.hostname.as_str()),
    };
    if !same_kernel {
        return Locality::Elsewhere;
    }
    if record.pid_namespace() == me.pid_namespace.as_deref() {
        Locality::SamePidNamespace
    } else {
        Locality::SameKernel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ParsedRecord;

    #[test]
    #[cfg_attr(
        not(target_os = "linux"),
        ignore = "boot id and PID namespace come from Linux /proc"
    )]
    fn identity_is_read_on_linux() {
        let me = host_identity();
        assert!(
            me.boot_id.as_deref().is_some_and(|b| b.len() >= 32),
            "{me:?}"
        );
        assert!(
            me.pid_namespace
                .as_deref()
                .is_some_and(|n| n.parse::<u64>().is_ok()),
            "{me:?}"
        );
    }

    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "needs a boot id (Linux /proc)")]
    fn locality_follows_boot_and_namespace() {
        let me = host_identity();
        let with = |boot: &str, ns: &str| {
            ParsedRecord::parse(
                format!(r#"{{"pid":1,"host":"h","bootId":"{boot}","pidNs":"{ns}"}}"#).as_bytes(),
            )
            .unwrap()
        };
        let boot = me.boot_id.clone().unwrap_or_default();
        let ns = me.pid_namespace.clone().unwrap_or_default();
        assert_eq!(locality_of(&with(&boot, &ns)), Locality::SamePidNamespace);
        assert_eq!(locality_of(&with(&boot, "1")), Locality::SameKernel);
        assert_eq!(locality_of(&with("other-boot", &ns)), Locality::Elsewhere);
        let original = ParsedRecord::parse(br#"{"pid":1,"heartbeat":2}"#).unwrap();
        assert_eq!(locality_of(&original), Locality::SamePidNamespace);
    }
}
