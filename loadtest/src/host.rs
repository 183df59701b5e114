//! What the load generator measures of the machine and the server process: load average,
//! CPU time and RSS from `/proc`, and `openssl speed` for the ratio.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Server RSS during the run, KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Rss {
    /// Before any load.
    pub(crate) start: u64,
    /// First sample of the measured window.
    pub(crate) window_start: u64,
    /// Largest sample.
    pub(crate) max: u64,
    /// Last sample of the measured window.
    pub(crate) end: u64,
    /// (seconds since start, KiB) every 5 s.
    pub(crate) series: Vec<(f64, u64)>,
}

/// CPU used during the measured window, in cores (CPU seconds per wall second), from
/// `/proc/<pid>/stat` utime + stime.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CpuSplit {
    /// The server process.
    pub(crate) server_cores: f64,
    /// This load generator.
    pub(crate) client_cores: f64,
}

impl Rss {
    /// Summarises RSS samples (seconds since start, KiB): the first, the first and last of
    /// the measured window (from `window_from` seconds), the largest, and one every 5 s.
    pub(crate) fn from_samples(samples: &[(f64, u64)], window_from: f64) -> Option<Rss> {
        let in_window: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= window_from)
            .map(|(_, k)| *k)
            .collect();
        let mut series = Vec::new();
        let mut next = 0.0;
        for &(t, k) in samples {
            if t >= next {
                series.push(((t * 10.0).round() / 10.0, k));
                next += 5.0;
            }
        }
        samples.first().map(|&(_, first)| Rss {
            start: first,
            window_start: in_window.first().copied().unwrap_or(first),
            max: samples.iter().map(|(_, k)| *k).max().unwrap_or(first),
            end: in_window.last().copied().unwrap_or(first),
            series,
        })
    }
}

/// Measures the CPU of the server (`server_pid`) and of this process between `from` and
/// `until` (the measured window); `None` when `/proc` cannot tell.
pub(crate) fn cpu_window(
    server_pid: Option<u32>,
    from: Instant,
    until: Instant,
) -> tokio::task::JoinHandle<Option<CpuSplit>> {
    let server = server_pid.map(|p| p.to_string());
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let s0 = server.as_deref().and_then(cpu_seconds);
        let c0 = cpu_seconds("self");
        tokio::time::sleep_until(until.into()).await;
        let wall = from.elapsed().as_secs_f64();
        let s1 = server.as_deref().and_then(cpu_seconds);
        let c1 = cpu_seconds("self");
        match (s0, s1, c0, c1) {
            (Some(s0), Some(s1), Some(c0), Some(c1)) if wall > 0.0 => Some(CpuSplit {
                server_cores: (s1 - s0) / wall,
                client_cores: (c1 - c0) / wall,
            }),
            _ => None,
        }
    })
}

/// `/proc/loadavg`'s three load averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// utime + stime of a process, seconds (clock ticks are 100 Hz on Linux).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples RSS every 250 ms until told to stop; returns (seconds since start, KiB).
pub(crate) async fn sample_rss(
    pid: u32,
    start: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(f64, u64)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(kib) = rss_kib(pid) {
                    samples.push((start.elapsed().as_secs_f64(), kib));
                }
            }
            _ = &mut stop => break,
        }
    }
    samples
}

/// How many CPUs a `taskset -c` list names (`0-1,4` -> 3); `None` if it is not one.
pub(crate) fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (
                lo.trim().parse::<usize>().ok()?,
                hi.trim().parse::<usize>().ok()?,
            ),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        if hi < lo {
            return None;
        }
        n = n.checked_add(hi - lo + 1)?;
    }
    (n > 0).then_some(n)
}

/// `openssl speed -seconds S -multi N ALG`, sign/s summed over the processes; on `cpus`
/// only (`taskset -c`) when given.
pub(crate) fn openssl_speed(
    alg: &str,
    seconds: u32,
    multi: usize,
    cpus: Option<&str>,
) -> Option<f64> {
    let mut cmd = match cpus {
        Some(list) => {
            let mut c = std::process::Command::new("taskset");
            c.arg("-c").arg(list).arg("openssl");
            c
        }
        None => std::process::Command::new("openssl"),
    };
    cmd.arg("speed").arg("-seconds").arg(seconds.to_string());
    if multi > 1 {
        cmd.arg("-multi").arg(multi.to_string());
    }
    let out = cmd.arg(alg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match alg {
            "rsa2048" if f.len() >= 6 && f[0] == "rsa" && f[1] == "2048" && f[2] == "bits" => {
                f[5].parse().ok()
            }
            "ecdsap256" if f.len() >= 7 && f[0] == "256" && f[3].contains("nistp256") => {
                f[6].parse().ok()
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Rss, cpu_list_len};

    #[test]
    fn cpu_lists_are_counted_as_taskset_reads_them() {
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0-1"), Some(2));
        assert_eq!(cpu_list_len("0-1,4"), Some(3));
        assert_eq!(cpu_list_len(" 2 - 3 , 6 "), Some(3));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("a"), None);
        assert_eq!(cpu_list_len(""), None);
    }

    #[test]
    fn rss_samples_are_summarised_over_the_window() {
        assert!(Rss::from_samples(&[], 2.0).is_none());
        let samples = [(0.0, 100), (1.0, 150), (2.0, 200), (6.0, 300), (9.0, 250)];
        let r = Rss::from_samples(&samples, 2.0).expect("samples");
        assert_eq!(
            (r.start, r.window_start, r.max, r.end),
            (100, 200, 300, 250)
        );
        assert_eq!(r.series, vec![(0.0, 100), (6.0, 300)]);
    }
}
