//! The runtime's processes: RSS and CPU time of the workerd processes in the
//! process group of the wrangler the bench script started, the file
//! descriptor limit, and spawning/stopping a server for cold starts.

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Raises the soft file-descriptor limit to the hard limit.
pub fn raise_fd_limit() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit");
        }
    }
    Ok(lim.rlim_cur)
}

#[derive(Debug, Clone)]
pub struct ProcSample {
    pub pid: i32,
    /// `proxy` (wrangler's proxy worker, listening on the dev port) or `user`.
    pub role: &'static str,
    pub rss_kb: u64,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
}

/// Every workerd process in process group `pgid`.
pub fn workerd_in_group(pgid: i32) -> Vec<ProcSample> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        // Fields after the comm: state ppid pgrp session tty tpgid flags
        // minflt cminflt majflt cmajflt utime stime ...
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if comm != "workerd" || fields.get(2).and_then(|s| s.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        let cpu_ticks = field(11) + field(12);
        let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let role = if String::from_utf8_lossy(&cmdline).contains("entry=127.0.0.1:0") { "user" } else { "proxy" };
        out.push(ProcSample { pid, role, rss_kb, cpu_ticks });
    }
    out.sort_by_key(|p| p.pid);
    out
}

pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

pub fn rss_json(samples: &[ProcSample]) -> Value {
    let total: u64 = samples.iter().map(|p| p.rss_kb).sum();
    let by_role = |r: &str| samples.iter().filter(|p| p.role == r).map(|p| p.rss_kb).sum::<u64>();
    json!({"total_kb": total, "user_kb": by_role("user"), "proxy_kb": by_role("proxy"), "processes": samples.len()})
}

/// CPU milliseconds used by each role between two samples.
pub fn cpu_delta_ms(before: &[ProcSample], after: &[ProcSample]) -> Value {
    let tps = ticks_per_sec();
    let delta = |role: &str| -> u64 {
        after
            .iter()
            .filter(|a| a.role == role)
            .map(|a| {
                let b = before.iter().find(|b| b.pid == a.pid).map_or(0, |b| b.cpu_ticks);
                a.cpu_ticks.saturating_sub(b)
            })
            .sum::<u64>()
            * 1000
            / tps
    };
    json!({"user_ms": delta("user"), "proxy_ms": delta("proxy")})
}

pub fn signal_group(pgid: i32, sig: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// TCP ports that process `pid` listens on (IPv4), from `/proc/net/tcp`
/// and the process's socket descriptors.
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            if let Ok(link) = std::fs::read_link(entry.path()) {
                let link = link.to_string_lossy().into_owned();
                if let Some(inode) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    listening_in_table(&table, &inodes)
}

/// `/proc/net/tcp` rows in state LISTEN (0A) whose inode is in `inodes`.
fn listening_in_table(table: &str, inodes: &std::collections::HashSet<String>) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.contains(*inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn finds_only_listening_sockets_of_the_process() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:9A5B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:9A5B 0100007F:D3C2 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1\n";
        let mine: std::collections::HashSet<String> = ["111", "333"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(listening_in_table(table, &mine), vec![0x9A5B]);
    }
}
