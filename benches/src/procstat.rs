//! Reads a process's CPU time and peak memory from Linux `/proc`, so a load run can report what
//! the server under test spent (and what the load generator itself spent) per record.

use std::io;
use std::path::PathBuf;
use std::process::Command;

/// Which process to read: the load generator itself or another one by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `/proc/self`.
    Current,
    /// `/proc/PID`.
    Pid(u32),
}

impl Process {
    fn path(self, file: &str) -> PathBuf {
        match self {
            Self::Current => PathBuf::from("/proc/self").join(file),
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}")).join(file),
        }
    }
}

/// Kernel clock ticks per second (`getconf CLK_TCK`), falling back to Linux's usual 100.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// User plus system CPU time of `process`, in clock ticks.
pub fn cpu_ticks(process: Process) -> io::Result<u64> {
    let stat = std::fs::read_to_string(process.path("stat"))?;
    parse_stat_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat format",
        )
    })
}

/// Peak resident set size (`VmHWM`) of `process`, in KiB.
pub fn peak_rss_kib(process: Process) -> io::Result<u64> {
    let status = std::fs::read_to_string(process.path("status"))?;
    parse_status_kib(&status, "VmHWM").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no VmHWM line in /proc/PID/status",
        )
    })
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last `)`: utime and stime are fields
/// 14 and 15, i.e. the 12th and 13th after the command name.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime = fields.next()?.parse::<u64>().ok()?;
    let stime = fields.next()?.parse::<u64>().ok()?;
    Some(utime + stime)
}

/// The value of a `Key:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != key {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_counts_fields_after_the_command_name() {
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "4242 (vigil (x) y) S 1 4242 4242 0 -1 4194560 12345 0 3 0 \
                    1500 250 0 0 20 0 9 0 98765 123456789 4321 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1750));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_parsing_finds_the_requested_key() {
        let status =
            "Name:\tvigil\nVmPeak:\t  900000 kB\nVmHWM:\t  321024 kB\nVmRSS:\t  300000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(321_024));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn the_current_process_can_be_read() {
        assert!(cpu_ticks(Process::Current).is_ok());
        assert!(peak_rss_kib(Process::Current).unwrap() > 0);
        assert!(clock_ticks_per_second() > 0);
    }
}
