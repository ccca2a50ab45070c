//! Per-invocation limits: server defaults, per-plugin overrides, and the ceiling no override
//! may pass. Also the memory limiter that tells a "memory limit" trap from any other.

use std::time::Duration;

use crate::model::PluginLimits;

/// Limits in force for one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline.
    pub deadline: Duration,
    /// `send-message` calls.
    pub send_messages: u32,
    /// Largest key-value value.
    pub kv_value_bytes: usize,
    /// Most keys.
    pub kv_keys: u32,
    /// Log bytes kept (host log, stdout and stderr together).
    pub log_bytes: usize,
    /// Largest `replace` payload.
    pub replace_bytes: usize,
}

/// The defaults, as documented in the README and the WIT.
pub const DEFAULTS: PluginLimits = PluginLimits {
    memory_mb: Some(64),
    deadline_ms: Some(1000),
    send_messages: Some(5),
    kv_value_bytes: Some(64 * 1024),
    kv_keys: Some(10_000),
    log_bytes: Some(64 * 1024),
    replace_bytes: Some(256 * 1024),
};

/// What no plugin may exceed, whatever its overrides.
pub const CEILING: PluginLimits = PluginLimits {
    memory_mb: Some(512),
    deadline_ms: Some(30_000),
    send_messages: Some(100),
    kv_value_bytes: Some(1024 * 1024),
    kv_keys: Some(1_000_000),
    log_bytes: Some(1024 * 1024),
    replace_bytes: Some(4 * 1024 * 1024),
};

fn pick(override_: Option<u32>, default: Option<u32>) -> u32 {
    override_.or(default).expect("every default is set")
}

impl Limits {
    /// The limits of a plugin with these overrides (already validated against the ceiling).
    pub fn resolve(o: &PluginLimits) -> Limits {
        Limits {
            memory_bytes: pick(o.memory_mb, DEFAULTS.memory_mb) as usize * 1024 * 1024,
            deadline: Duration::from_millis(u64::from(pick(o.deadline_ms, DEFAULTS.deadline_ms))),
            send_messages: pick(o.send_messages, DEFAULTS.send_messages),
            kv_value_bytes: pick(o.kv_value_bytes, DEFAULTS.kv_value_bytes) as usize,
            kv_keys: pick(o.kv_keys, DEFAULTS.kv_keys),
            log_bytes: pick(o.log_bytes, DEFAULTS.log_bytes) as usize,
            replace_bytes: pick(o.replace_bytes, DEFAULTS.replace_bytes) as usize,
        }
    }
}

/// Each override's name and the lowest and highest value it may take (the ceiling), in the
/// order of [`PluginLimits`]' fields; the API document states the same bounds.
pub fn bounds() -> [(&'static str, u32, u32); 7] {
    let max = |ceiling: Option<u32>| ceiling.expect("every ceiling is set");
    [
        ("memory_mb", 1, max(CEILING.memory_mb)),
        ("deadline_ms", 1, max(CEILING.deadline_ms)),
        // Zero is meaningful here: no messages, no keys.
        ("send_messages", 0, max(CEILING.send_messages)),
        ("kv_value_bytes", 1, max(CEILING.kv_value_bytes)),
        ("kv_keys", 0, max(CEILING.kv_keys)),
        ("log_bytes", 1, max(CEILING.log_bytes)),
        ("replace_bytes", 1, max(CEILING.replace_bytes)),
    ]
}

/// Checks overrides against [`bounds`]; the error names the field.
pub fn validate(o: &PluginLimits) -> Result<(), String> {
    let values = [
        o.memory_mb,
        o.deadline_ms,
        o.send_messages,
        o.kv_value_bytes,
        o.kv_keys,
        o.log_bytes,
        o.replace_bytes,
    ];
    for ((name, min, max), value) in bounds().into_iter().zip(values) {
        if let Some(v) = value {
            if v < min {
                return Err(format!("limits.{name}: must be at least {min}"));
            }
            if v > max {
                return Err(format!("limits.{name}: at most {max} on this server"));
            }
        }
    }
    Ok(())
}

/// Caps the linear memory of an instance, all its memories together (a component may have
/// several), and remembers whether the cap was hit, so the failure can say so, and the most it
/// allowed. Counting them together is what makes the limit the instance's real ceiling, which
/// the memory budget reserves (see `super::budget`).
pub struct MemoryLimiter {
    max: usize,
    /// Bytes of every memory of the instance together.
    total: usize,
    /// Set when a growth was refused.
    pub hit: bool,
    /// The most linear memory the instance had at once, in bytes.
    pub peak: usize,
}

impl MemoryLimiter {
    /// A limiter allowing `max` bytes of linear memory in all.
    pub fn new(max: usize) -> MemoryLimiter {
        MemoryLimiter {
            max,
            total: 0,
            hit: false,
            peak: 0,
        }
    }

    /// Starts counting another event of the same instance (reuse mode): its memory stays
    /// counted; whether the limit was hit, and the peak, are the new event's own.
    pub fn start_event(&mut self) {
        self.hit = false;
        self.peak = self.total;
    }

    /// Bytes of every memory of the instance together, now.
    pub fn current(&self) -> usize {
        self.total
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A memory's creation is a growth from 0 to its initial size, so `total` sees them all.
        let total = (self.total - current.min(self.total)).saturating_add(desired);
        if total > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_counts_every_memory_together() {
        use wasmtime::ResourceLimiter;
        let mut l = MemoryLimiter::new(10 << 20);
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(!l.memory_growing(4 << 20, 7 << 20, None).unwrap());
        assert!(l.hit);
        assert!(l.memory_growing(4 << 20, 5 << 20, None).unwrap());
        assert_eq!(l.peak, 9 << 20);
    }

    #[test]
    fn overrides_replace_defaults_within_the_ceiling() {
        let l = Limits::resolve(&PluginLimits {
            memory_mb: Some(16),
            ..Default::default()
        });
        assert_eq!(l.memory_bytes, 16 << 20);
        assert_eq!(l.deadline, Duration::from_secs(1));
        assert_eq!(l.send_messages, 5);
        assert!(
            validate(&PluginLimits {
                deadline_ms: Some(60_000),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate(&PluginLimits {
                memory_mb: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate(&PluginLimits {
                send_messages: Some(0),
                ..Default::default()
            })
            .is_ok()
        );
    }
}
