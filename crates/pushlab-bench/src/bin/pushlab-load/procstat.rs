//! What a process costs, read from Linux's `/proc`: resident memory from
//! `/proc/PID/status` and CPU time from `/proc/PID/stat`.

use std::time::Instant;

/// A process to watch: the server (by `--server-pid`) or this one.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    Pid(u32),
    Myself,
}

/// CPU time used so far, and when it was read.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    /// User plus system time, in seconds.
    cpu_secs: f64,
    at: Instant,
}

impl CpuReading {
    /// The share of one core used between `earlier` and this reading, in percent.
    pub fn percent_since(&self, earlier: &CpuReading) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        100.0 * (self.cpu_secs - earlier.cpu_secs) / wall
    }
}

impl Process {
    fn dir(&self) -> String {
        match self {
            Process::Pid(pid) => format!("/proc/{pid}"),
            Process::Myself => "/proc/self".into(),
        }
    }

    /// Resident set size in KiB (`VmRSS`), or `None` if the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User plus system CPU time so far.
    pub fn cpu(&self) -> Option<CpuReading> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir())).ok()?;
        // The command name (field 2) may hold spaces; fields after it are plain.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, so 11 and
        // 12 counting from field 3.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(CpuReading {
            cpu_secs: (utime + stime) / ticks,
            at,
        })
    }
}
