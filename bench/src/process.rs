//! What a benchmark reads of a process it started: CPU time and resident memory, from `/proc`.

/// CPU seconds (user + system) a process used so far; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = stat_after_name(pid)?;
    let fields: Vec<&str> = stat.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_second())
}

/// The CPU seconds of several processes together (those gone count nothing).
pub fn cpu_seconds_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| cpu_seconds(*pid)).sum()
}

/// The processes whose parent is `pid` (nginx's workers, under its master).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| parent_of(*child) == Some(pid))
        .collect()
}

/// The parent of a process, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    stat_after_name(pid)?.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/PID/stat` after the command name (which may hold spaces and parentheses): the
/// state is the first field, the parent the second, user and system time the 12th and 13th.
fn stat_after_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.to_string())
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `/proc/PID/stat` counts CPU time in clock ticks: 100 per second on every Linux this runs on
/// (`USER_HZ`, fixed by the kernel's ABI).
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(cpu_seconds(me).is_some_and(|s| s > 0.0));
        assert!(rss_mib(me).is_some_and(|m| m > 0.0));
        assert_eq!(cpu_seconds_of(&[u32::MAX]), 0.0, "a process that is gone counts nothing");
        let child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let found = children_of(me).contains(&child.id());
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "a child of this process is found by its parent");
    }
}
