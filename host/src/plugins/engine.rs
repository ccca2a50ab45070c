//! The one wasmtime `Engine` of the process, and the epoch ticker that enforces deadlines.
//!
//! Settings follow measurements (BENCHMARKS.md, plugin invocation): the pooling
//! allocator with linear memories and tables kept resident (reset with `PAGEMAP_SCAN` where
//! the kernel has it) is what makes a fresh instance per event cost microseconds.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::CEILING;

/// How often the epoch advances: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings every engine of the process shares: what decides how code is compiled, hence
/// whether an artifact compiled by one loads in another.
fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20)
        // The frames a trap's backtrace keeps: telling a stack overflow in linear memory from
        // another out-of-bounds access adds up the frames on it (see `stack`). Not part of the
        // compatibility hash: stored artifacts stay valid.
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(super::stack::BACKTRACE_FRAMES))
        // No component-model async in our host: skipping its per-store state is measurably cheaper.
        .concurrency_support(false);
    config
}

/// An engine that only compiles: the server's compiler settings, without the instance pool
/// or the epoch ticker. Compiling with a throwaway engine gives back what the compiler keeps
/// between compilations (its per-thread contexts, sized by the largest function it has seen:
/// tens of megabytes for a Python interpreter) when it is dropped; the artifacts it makes
/// load in the server's engine (same compatibility hash).
pub fn for_compiling() -> wasmtime::Result<Engine> {
    Engine::new(&base_config())
}

/// Builds the engine. `instances` bounds how many plugin instances may be alive at once.
pub fn new(instances: u32) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let max_memory = CEILING.memory_mb.expect("set") as usize * 1024 * 1024;
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 8)
        .total_stacks(instances)
        .max_memory_size(max_memory)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(64)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 20)
        .pagemap_scan(Enabled::Auto);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

/// A stable text form of the engine's compatibility hash: compiled artifacts made under a
/// different hash must be compiled again.
pub fn compatibility_hash(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Advances the epoch every tick; holds only a weak reference so the engine can be dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmhook-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_compiling_engine_makes_loads_in_the_server_engine() {
        let server = new(4).unwrap();
        let compiling = for_compiling().unwrap();
        assert_eq!(compatibility_hash(&server), compatibility_hash(&compiling));
        let wat = r#"(component (core module (func (export "f"))))"#;
        let compiled = compiling.precompile_component(wat.as_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: bytes this test just compiled with a compatible engine.
        let loaded = unsafe { wasmtime::component::Component::deserialize(&server, &compiled) };
        loaded.unwrap();
    }
}
