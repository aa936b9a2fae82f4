//! Task CPU and memory use, read from each task's cgroup (the directories the runtime recorded
//! at create), as the autoscaler wants them: CPU as a fraction of the task's CPU limit (1.0 =
//! the whole limit used; a task without a limit is measured against one core), memory in bytes.
//! CPU is a rate, so each sample is the delta since the previous one for that task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One task's use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_fraction: f64,
    pub memory_bytes: u64,
}

/// Remembers the last CPU counter of each task.
#[derive(Default)]
pub struct CpuSampler {
    last: HashMap<String, (Instant, u64)>,
}

impl CpuSampler {
    /// Samples a task whose cgroup dirs are `dirs` and whose limit is `cpu_millis` (0: none).
    /// `None` until a second sample gives a rate (or when the cgroup is gone).
    pub fn sample(&mut self, task: &str, dirs: &[PathBuf], cpu_millis: u32) -> Option<Usage> {
        let used_ns = cpu_usage_ns(dirs)?;
        let memory_bytes = memory_bytes(dirs).unwrap_or(0);
        let now = Instant::now();
        let previous = self.last.insert(task.to_string(), (now, used_ns));
        let (then, before) = previous?;
        let wall_ns = now.duration_since(then).as_nanos() as f64;
        if wall_ns <= 0.0 {
            return None;
        }
        let cores = if cpu_millis == 0 { 1.0 } else { f64::from(cpu_millis) / 1000.0 };
        let cpu_fraction = used_ns.saturating_sub(before) as f64 / (wall_ns * cores);
        Some(Usage { cpu_fraction, memory_bytes })
    }

    /// Forgets tasks that are gone.
    pub fn retain(&mut self, alive: impl Fn(&str) -> bool) {
        self.last.retain(|task, _| alive(task));
    }
}

/// Total CPU time of the cgroup in nanoseconds: cgroup v2 `cpu.stat` usage_usec, or v1
/// `cpuacct.usage`.
pub fn cpu_usage_ns(dirs: &[PathBuf]) -> Option<u64> {
    for dir in dirs {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.stat"))
            && let Some(usec) = stat_field(&text, "usage_usec")
        {
            return Some(usec * 1000);
        }
        if let Some(ns) = read_u64(&dir.join("cpuacct.usage")) {
            return Some(ns);
        }
    }
    None
}

/// Memory in use by the cgroup: v2 `memory.current` or v1 `memory.usage_in_bytes`.
pub fn memory_bytes(dirs: &[PathBuf]) -> Option<u64> {
    dirs.iter().find_map(|d| read_u64(&d.join("memory.current")).or_else(|| read_u64(&d.join("memory.usage_in_bytes"))))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_fraction_of_the_limit_between_samples() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        std::fs::write(dir.path().join("cpuacct.usage"), "1000000000").unwrap();
        std::fs::write(dir.path().join("memory.usage_in_bytes"), "4096").unwrap();
        let mut s = CpuSampler::default();
        assert_eq!(s.sample("t", &dirs, 500), None, "the first sample has no rate");
        std::thread::sleep(std::time::Duration::from_millis(100));
        // 50 ms of CPU in ~100 ms against a 0.5-core limit: about 1.0.
        std::fs::write(dir.path().join("cpuacct.usage"), "1050000000").unwrap();
        let u = s.sample("t", &dirs, 500).unwrap();
        assert!(u.cpu_fraction > 0.7 && u.cpu_fraction <= 1.0, "{u:?}");
        assert_eq!(u.memory_bytes, 4096);
    }

    #[test]
    fn cgroup_v2_files_are_read_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "123\n").unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        assert_eq!(cpu_usage_ns(&dirs), Some(2_500_000));
        assert_eq!(memory_bytes(&dirs), Some(123));
    }
}
