//! The process's CPU use, in cores (1.0 = one core busy all the time), from the user
//! and system time in `/proc/self/stat` between two readings.

use std::time::Instant;

/// Successive readings of the process's CPU time.
#[derive(Debug)]
pub struct CpuMeter {
    ticks_per_second: f64,
    last: Option<(Instant, u64)>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self {
            // `/proc` counts in USER_HZ, which Linux fixes at 100 for user space
            // whatever the kernel's own tick.
            ticks_per_second: 100.0,
            last: None,
        }
    }
}

/// utime + stime of `/proc/self/stat`, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // `pid (comm) state ...`: fields after the command name, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

impl CpuMeter {
    /// The CPU used since the previous reading, in cores; `None` at the first reading
    /// or where `/proc` cannot be read.
    pub fn read(&mut self, now: Instant) -> Option<f64> {
        let ticks = cpu_ticks()?;
        let previous = self.last.replace((now, ticks));
        let (then, before) = previous?;
        let wall = now.duration_since(then).as_secs_f64();
        (wall > 0.0).then(|| ticks.saturating_sub(before) as f64 / self.ticks_per_second / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_reads_as_cpu() {
        let mut meter = CpuMeter::default();
        let start = Instant::now();
        assert_eq!(meter.read(start), None);
        let mut x = 0u64;
        while start.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = meter.read(Instant::now()).unwrap();
        // One thread spun: close to one core (a loaded machine may give it less).
        assert!(used > 0.2 && used < 2.5, "{used}");
    }
}
