//! Memory, CPU time, load and uptime, from `/proc`.

use procfs::prelude::*;
use procfs::{CpuTime, KernelStats, LoadAverage, Meminfo, Uptime};

/// CPU time spent per state, in seconds.
#[derive(Debug, Clone)]
pub struct CpuSeconds {
    /// `cpu` for all cores, `cpuN` for one.
    pub name: String,
    /// User-mode time.
    pub user: f64,
    /// Low-priority user time.
    pub nice: f64,
    /// Kernel time.
    pub system: f64,
    /// Idle time.
    pub idle: f64,
    /// Waiting for I/O.
    pub iowait: f64,
    /// Serving interrupts.
    pub irq: f64,
    /// Serving soft interrupts.
    pub softirq: f64,
    /// Taken by the hypervisor.
    pub steal: f64,
}

/// A snapshot of the node's resource use.
#[derive(Debug, Clone)]
pub struct Stats {
    /// From `/proc/meminfo`, in bytes.
    pub memory: Meminfo,
    /// The sum over cores first, then each core.
    pub cpus: Vec<CpuSeconds>,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Seconds since boot.
    pub uptime_seconds: f64,
    /// machined's resident set size in bytes.
    pub machined_rss_bytes: u64,
    /// Processes on the node.
    pub processes: u32,
}

/// Reads the node's resource use.
pub fn read() -> procfs::ProcResult<Stats> {
    let kernel = KernelStats::current()?;
    let ticks = procfs::ticks_per_second() as f64;
    let seconds = |name: String, t: &CpuTime| CpuSeconds {
        name,
        user: t.user as f64 / ticks,
        nice: t.nice as f64 / ticks,
        system: t.system as f64 / ticks,
        idle: t.idle as f64 / ticks,
        iowait: t.iowait.unwrap_or(0) as f64 / ticks,
        irq: t.irq.unwrap_or(0) as f64 / ticks,
        softirq: t.softirq.unwrap_or(0) as f64 / ticks,
        steal: t.steal.unwrap_or(0) as f64 / ticks,
    };
    let mut cpus = vec![seconds("cpu".into(), &kernel.total)];
    cpus.extend(kernel.cpu_time.iter().enumerate().map(|(i, t)| seconds(format!("cpu{i}"), t)));
    let load = LoadAverage::current()?;
    let rss_kib = procfs::process::Process::myself()?.status()?.vmrss.unwrap_or(0);
    Ok(Stats {
        memory: Meminfo::current()?,
        cpus,
        load: [load.one, load.five, load.fifteen].map(f64::from),
        uptime_seconds: Uptime::current()?.uptime,
        machined_rss_bytes: rss_kib * 1024,
        processes: procfs::process::all_processes()?.count() as u32,
    })
}
