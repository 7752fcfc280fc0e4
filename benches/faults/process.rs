//! This process and the machine: resident memory, open file descriptors, load average, and the
//! shell commands that stop and start the backends.

/// Resident memory in KiB (`VmRSS` in `/proc/self/status`).
pub(crate) fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Open file descriptors (entries of `/proc/self/fd`).
pub(crate) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("Linux /proc")
        .count() as u64
}

/// The machine's load averages over 1, 5 and 15 minutes, as `/proc/loadavg` gives them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `command` with `sh -c`, its output on this process's; panics when it fails, as the
/// scenario would then measure no fault.
pub(crate) async fn shell(command: &str) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .expect("sh runs");
    assert!(status.success(), "{command:?} failed: {status}");
}
