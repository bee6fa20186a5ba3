//! What a process costs, read from Linux's `/proc`: resident memory from
//! `/proc/PID/status` and CPU time from `/proc/PID/stat`. A server side of
//! several processes (pushlab nodes and the Redis they share) is read as
//! one, process by process.

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

    /// The command name (`/proc/PID/comm`), such as `pushlab` or `redis-server`.
    pub fn command(&self) -> Option<String> {
        let comm = std::fs::read_to_string(format!("{}/comm", self.dir())).ok()?;
        Some(comm.trim_end().to_owned())
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

/// The server side of a measurement: every process given with
/// `--server-pid`, one server or pushlab nodes and their Redis.
#[derive(Debug, Clone, Default)]
pub struct ServerSide {
    pids: Vec<u32>,
}

/// A CPU reading of every process of a [`ServerSide`], in its order; `None`
/// for a process that could not be read.
pub struct SideReading(Vec<Option<CpuReading>>);

impl ServerSide {
    pub fn new(pids: &[u32]) -> Self {
        ServerSide {
            pids: pids.to_vec(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    pub fn cpu(&self) -> SideReading {
        SideReading(
            self.pids
                .iter()
                .map(|&pid| Process::Pid(pid).cpu())
                .collect(),
        )
    }

    /// Resident set size of every process together, in KiB; `None` if any
    /// is gone, or none was given.
    pub fn rss_kib(&self) -> Option<u64> {
        total(self.pids.iter().map(|&pid| Process::Pid(pid).rss_kib()))
    }
}

impl SideReading {
    /// Each process's share of one core since `earlier`, in percent.
    pub fn percents_since(&self, earlier: &SideReading) -> Vec<Option<f64>> {
        self.0
            .iter()
            .zip(&earlier.0)
            .map(|(now, then)| Some(now.as_ref()?.percent_since(then.as_ref()?)))
            .collect()
    }
}

/// The sum of a figure over the processes of a server side: `None` if any
/// process's figure is missing, since a part would pass for the whole, or
/// if there are none.
pub fn total<T: std::iter::Sum<T>>(each: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut each = each.into_iter().peekable();
    each.peek()?;
    each.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_side_costs_the_sum_of_its_processes_and_nothing_if_one_is_unread() {
        assert_eq!(total([Some(40.0), Some(2.5)]), Some(42.5));
        assert_eq!(total([Some(40.0), None]), None);
        assert_eq!(total(Vec::<Option<u64>>::new()), None);
    }

    #[test]
    fn this_process_can_be_read_as_a_server_side_of_one() {
        let side = ServerSide::new(&[std::process::id()]);
        let before = side.cpu();
        let after = side.cpu();
        let percents = after.percents_since(&before);
        assert_eq!(percents.len(), 1);
        assert!(percents[0].is_some_and(|p| p >= 0.0));
        assert!(side.rss_kib().is_some_and(|kib| kib > 0));
        assert!(Process::Myself.command().is_some_and(|c| !c.is_empty()));
    }
}
