//! The standard `process_*` metrics (CPU, memory, file descriptors, start
//! time), read from `/proc/self` on each scrape, as every Prometheus client
//! library exports them; dashboards and alerts expect these names.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in `/proc` in units of USER_HZ, which is 100 on
/// every architecture Linux runs on today.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) start_time_seconds: f64,
    pub(crate) open_fds: u64,
    pub(crate) max_fds: Option<u64>,
}

/// Reads the fields of `/proc/<pid>/stat` after the command name, which may
/// hold spaces and parentheses: (utime, stime, starttime, vsize, rss pages).
fn stat_fields(stat: &str) -> Option<(u64, u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); utime is field 14.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?, field(23)?))
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn resident(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files in `/proc/<pid>/limits` (`None` when
/// unlimited or unreadable).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Sample {
    /// This process now; `None` off Linux or when `/proc` is unreadable.
    pub(crate) fn read() -> Option<Self> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let (utime, stime, start_ticks, virtual_bytes) = stat_fields(&read("/proc/self/stat")?)?;
        let boot = boot_time(&read("/proc/stat")?)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(Self {
            cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
            resident_bytes: read("/proc/self/status")
                .as_deref()
                .and_then(resident)
                .unwrap_or_default(),
            virtual_bytes,
            start_time_seconds: boot as f64 + start_ticks as f64 / TICKS_PER_SECOND,
            // The directory's own handle, open while it is listed.
            open_fds: open_fds.saturating_sub(1),
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(max_open_files),
        })
    }
}

/// Exports [`Sample::read`] on each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(s) = Sample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds as f64,
            ),
        ];
        let max = s.max_fds.map(|m| {
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                m as f64,
            )
        });
        for (name, help, value) in gauges.into_iter().chain(max) {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_whatever_the_command_name_holds() {
        let stat = "4242 (probity (op) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 8 0 12345 104857600 2048 18446744073709551615";
        assert_eq!(stat_fields(stat), Some((250, 50, 12345, 104_857_600)));
        assert_eq!(stat_fields("garbage"), None);
        assert_eq!(
            resident("Name:\tprobity\nVmRSS:\t  2048 kB\n"),
            Some(2_097_152)
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1765000000\n"),
            Some(1_765_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn this_process_is_measured() {
        let s = Sample::read().expect("/proc/self");
        assert!(
            s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes,
            "{s:?}"
        );
        assert!(s.open_fds >= 3, "{s:?}");
        assert!(s.start_time_seconds > 1.5e9, "{s:?}");
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
