//! Telling a stack overflow in linear memory from any other out-of-bounds access, for traps
//! that carry no faulting address.
//!
//! Guests compiled by LLVM (Rust, C, Zig) keep part of their call stack in linear memory, below
//! a stack pointer that is a mutable `i32` global of the core module (`__stack_pointer`). Each
//! function that needs such a frame subtracts its size from the global in its prologue
//! (`global.get $sp; i32.const N; i32.sub; local.tee $fp; global.set $sp`) and adds it back in
//! its epilogue. Rust links with `--stack-first`: the stack is the bottom of memory, from its
//! initial value down to address 0, and an overflow takes the pointer below 0, where it wraps
//! around to the top of the 32-bit address space. When the first access to the wrapped frame is
//! a load or a store, wasmtime reports the faulting address (near 4 GiB, see
//! `invoke::below_address_zero`). When it is a bulk memory instruction (`memory.copy`,
//! `memory.fill`: how LLVM copies or zeroes a large frame), wasmtime checks the range itself
//! and reports `MemoryOutOfBounds` without any address.
//!
//! For those, this module rebuilds the stack pointer from what is known statically and what
//! the trap carries: when a plugin is loaded, [`StackMap::of_component`] finds, in each core
//! module of the component, the stack-pointer global, its initial value and each function's
//! frame size (from its prologue); when such a trap happens, [`StackMap::overflowed`] adds up
//! the frames of that module on the trap's backtrace (wasmtime's `WasmBacktrace`, whose frames
//! carry their function index and their offset in the component's bytes). More frame bytes than
//! the initial stack pointer means the pointer is below 0: the access that trapped was the stack
//! running out, not a bug elsewhere.
//!
//! Why this design: it costs nothing while plugins succeed (one parse at load time; the
//! backtrace is captured by wasmtime for every trap anyway), it needs no rewriting of the
//! uploaded component (whose compiled artifact, debug info and size stay as uploaded), and every
//! uncertainty errs on the side of "not proven": a frame we cannot place, a function whose
//! prologue is not the plain pattern, a backtrace cut short by wasmtime's frame limit all count
//! as zero bytes, which can only miss an overflow, never invent one. A module whose stack
//! pointer is written in ways other than prologues, epilogues and `alloca` (stack switching,
//! a pointer imported from another module as dynamically linked components do) is not analysed
//! at all, nor is a module that may be instantiated more than once (frames of two instances
//! would be added against one stack).
//!
//! This module must not be consulted for anything but an out-of-bounds trap: it knows about
//! frames, not about the rest of memory.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, ComponentTypeRef, Instance,
    KnownCustom, Name, Operator, Parser, Payload, TypeRef, ValType,
};
use wasmtime::{FrameInfo, Module, WasmBacktrace};

/// Wasm frames wasmtime records on a trap's backtrace (its default is 20). Enough for a shadow
/// stack of 1 MiB made of frames of 64 bytes on average; a deeper stack is cut, which only
/// makes [`StackMap::overflowed`] count less. Only traps pay for it.
pub const BACKTRACE_FRAMES: usize = 16 * 1024;

/// The stack layout of the core modules of one component (empty when none could be analysed).
#[derive(Debug, Default)]
pub struct StackMap {
    modules: Vec<ModuleStack>,
}

/// One core module whose stack pointer is understood.
#[derive(Debug)]
struct ModuleStack {
    /// Where the module's bytes are in the component: wasmtime reports a frame's position as an
    /// offset in the whole component, which tells which core module the frame runs in.
    bytes: Range<usize>,
    /// The stack pointer's initial value: the bytes of stack below it.
    initial: u32,
    /// Whether every change of the stack pointer is a prologue of a known size or an
    /// epilogue, so that the frames on a backtrace add up to exactly the stack in use
    /// (no `alloca`, no frame aligned beyond its size).
    exact: bool,
    /// Functions imported by the module: defined function `i` has index `imported + i`.
    imported_funcs: u32,
    /// Each defined function's body (offsets in the component) and frame size.
    bodies: Vec<Body>,
}

#[derive(Debug)]
struct Body {
    start: u32,
    end: u32,
    frame: u32,
}

impl StackMap {
    /// Analyses the core modules of a component. Never fails: what cannot be parsed or
    /// understood is left out (wasmtime validates the component, not this).
    pub fn of_component(wasm: &[u8]) -> StackMap {
        let mut map = StackMap::default();
        let _ = map.read(wasm);
        map
    }

    /// Whether the trap `err` happened with the stack pointer of the trapping core module
    /// below 0, i.e. after the stack in linear memory ran out: `Some(true)` when the frames on
    /// its backtrace prove it, `Some(false)` when they prove the pointer was still in the
    /// stack (every frame counted exactly), `None` when they cannot tell.
    pub fn overflowed(&self, err: &wasmtime::Error) -> Option<bool> {
        let trace = err.downcast_ref::<WasmBacktrace>()?;
        let frames = trace.frames();
        let top = frames.first()?;
        let (module, _) = self.locate(top)?;
        // A backtrace cut at wasmtime's limit lacks the outermost frames.
        let mut exact = module.exact && frames.len() < BACKTRACE_FRAMES;
        let mut used: u64 = 0;
        // Frames of the same compiled module: another core module has its own stack (or one
        // we do not know how it shares).
        for frame in frames
            .iter()
            .filter(|f| Module::same(f.module(), top.module()))
        {
            match self.locate(frame) {
                Some((m, size)) if std::ptr::eq(m, module) => used += u64::from(size),
                _ => exact = false,
            }
        }
        if used > u64::from(module.initial) {
            Some(true)
        } else {
            exact.then_some(false)
        }
    }

    /// The analysed module a frame runs in and that frame's size, when the frame's position is
    /// inside the body of the very function the frame names.
    fn locate(&self, frame: &FrameInfo) -> Option<(&ModuleStack, u32)> {
        let offset = frame.module_offset()?;
        let module = self.modules.iter().find(|m| m.bytes.contains(&offset))?;
        let defined = frame.func_index().checked_sub(module.imported_funcs)?;
        let body = module.bodies.get(defined as usize)?;
        let offset = u32::try_from(offset).ok()?;
        (body.start..body.end)
            .contains(&offset)
            .then_some((module, body.frame))
    }

    fn read(&mut self, wasm: &[u8]) -> wasmparser::Result<()> {
        // Nesting of what is being read: components, and at most one core module inside.
        let mut components: Vec<ComponentScope> = Vec::new();
        let mut module: Option<(Range<usize>, ModuleReader)> = None;
        let mut pending_module: Option<Range<usize>> = None;
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Some((_, reader)) = &mut module {
                if let Payload::End(_) = payload {
                    let (bytes, reader) = module.take().expect("in a module");
                    let analysed = reader.finish(bytes);
                    if let Some(scope) = components.last_mut() {
                        scope.defined.push(analysed);
                    }
                } else {
                    reader.payload(payload)?;
                }
                continue;
            }
            match payload {
                Payload::Version { .. } => {
                    if let Some(bytes) = pending_module.take() {
                        module = Some((bytes, ModuleReader::default()));
                    } else {
                        components.push(ComponentScope::default());
                    }
                }
                Payload::ModuleSection {
                    unchecked_range, ..
                } => {
                    let scope = components.last_mut().expect("in a component");
                    scope.module_index_space.push(Some(scope.defined.len()));
                    pending_module = Some(unchecked_range);
                }
                Payload::ComponentImportSection(imports) => {
                    let scope = components.last_mut().expect("in a component");
                    for import in imports {
                        if let ComponentTypeRef::Module(_) = import?.ty {
                            scope.module_index_space.push(None);
                        }
                    }
                }
                Payload::ComponentAliasSection(aliases) => {
                    let scope = components.last_mut().expect("in a component");
                    for alias in aliases {
                        let module = match alias? {
                            ComponentAlias::InstanceExport { kind, .. } => {
                                kind == ComponentExternalKind::Module
                            }
                            ComponentAlias::Outer { kind, .. } => {
                                kind == ComponentOuterAliasKind::CoreModule
                            }
                            ComponentAlias::CoreInstanceExport { .. } => false,
                        };
                        if module {
                            scope.module_index_space.push(None);
                        }
                    }
                }
                Payload::InstanceSection(instances) => {
                    let scope = components.last_mut().expect("in a component");
                    for instance in instances {
                        if let Instance::Instantiate { module_index, .. } = instance? {
                            *scope.instantiations.entry(module_index).or_default() += 1;
                        }
                    }
                }
                Payload::End(_) => {
                    let scope = components.pop().expect("in a component");
                    // Only the outermost component is instantiated exactly once; the modules
                    // of a nested component may run in as many instances as it has.
                    if components.is_empty() {
                        self.modules = scope.modules_instantiated_once();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What is known of one component's core modules while reading it.
#[derive(Default)]
struct ComponentScope {
    /// The modules defined in it, in order, with their analysis.
    defined: Vec<Option<ModuleStack>>,
    /// The core module index space: `Some(i)` for the `i`th defined module, `None` for an
    /// imported or aliased one.
    module_index_space: Vec<Option<usize>>,
    /// How many times each core module index is instantiated.
    instantiations: HashMap<u32, u32>,
}

impl ComponentScope {
    fn modules_instantiated_once(mut self) -> Vec<ModuleStack> {
        let mut out = Vec::new();
        for (index, defined) in self.module_index_space.iter().enumerate() {
            let Some(defined) = defined else { continue };
            let count = u32::try_from(index)
                .ok()
                .and_then(|i| self.instantiations.get(&i).copied())
                .unwrap_or(0);
            if count == 1
                && let Some(module) = self.defined[*defined].take()
            {
                out.push(module);
            }
        }
        out
    }
}

/// An operator, reduced to what stack-pointer patterns are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GlobalGet(u32),
    Const(i32),
    Sub,
    Add,
    And,
    LocalGet(u32),
    Other,
}

/// Reads one core module.
#[derive(Default)]
struct ModuleReader {
    imported_funcs: u32,
    imported_globals: u32,
    /// Defined globals: whether each is a mutable `i32`, and its constant initial value.
    globals: Vec<Option<i32>>,
    global_names: HashMap<u32, String>,
    bodies: Vec<BodyShape>,
    /// Globals written in a way that is not a prologue, an epilogue or an `alloca`.
    written_otherwise: HashSet<u32>,
    /// Globals decremented by amounts not known exactly: `alloca`, aligned frames.
    decremented_otherwise: HashSet<u32>,
}

/// What a function body does with stack pointers.
struct BodyShape {
    start: u32,
    end: u32,
    /// The global and frame size of a prologue that opens the body.
    prologue: Option<(u32, u32)>,
}

impl ModuleReader {
    fn payload(&mut self, payload: Payload<'_>) -> wasmparser::Result<()> {
        match payload {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import?.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => self.imported_funcs += 1,
                        TypeRef::Global(_) => self.imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                for global in globals {
                    let global = global?;
                    let ty = global.ty;
                    let mut init = global.init_expr.get_operators_reader();
                    let value = match init.read()? {
                        Operator::I32Const { value }
                            if ty.mutable && ty.content_type == ValType::I32 =>
                        {
                            Some(value)
                        }
                        _ => None,
                    };
                    self.globals.push(value);
                }
            }
            Payload::CodeSectionEntry(body) => {
                let shape = self.body(&body)?;
                self.bodies.push(shape);
            }
            Payload::CustomSection(section) => {
                if let KnownCustom::Name(names) = section.as_known() {
                    for name in names {
                        // A malformed name section only loses names.
                        let Ok(Name::Global(map)) = name else {
                            continue;
                        };
                        for naming in map.into_iter().flatten() {
                            self.global_names
                                .insert(naming.index, naming.name.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads a function body, noting its prologue and checking every `global.set` in it.
    ///
    /// The shapes LLVM's WebAssembly backend writes, `$sp` being any global:
    /// - prologue, the body's first operators: `global.get $sp (local.tee $x)? i32.const N
    ///   i32.sub (i32.const M i32.and)? (local.tee $fp)? global.set $sp` (the `and` aligns
    ///   the frame further, so N is a lower bound of its size);
    /// - `alloca` anywhere: the same with `local.get` for the constant;
    /// - epilogue: `local.get $fp (i32.const N i32.add)? global.set $sp`, `$fp` being a local
    ///   the body set from `$sp`.
    ///
    /// `local.set $x local.get $x` is read as `local.tee $x`.
    fn body(&mut self, body: &wasmparser::FunctionBody<'_>) -> wasmparser::Result<BodyShape> {
        let range = body.range();
        let mut shape = BodyShape {
            start: u32::try_from(range.start).unwrap_or(u32::MAX),
            end: u32::try_from(range.end).unwrap_or(u32::MAX),
            prologue: None,
        };
        // The operators of the current expressions, newest last (`global.set` consumes the
        // value of a suffix of them); `at_entry` while nothing but a prologue's operators has
        // been seen.
        let mut window: Vec<Op> = Vec::with_capacity(WINDOW);
        let mut at_entry = true;
        // (global, local): locals holding a value of a stack pointer (frame bases).
        let mut from_sp: HashSet<(u32, u32)> = HashSet::new();
        // A `local.set` that a `local.get` of the same local may turn into a `local.tee`.
        let mut pending_set: Option<u32> = None;
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            let op = ops.read()?;
            if let Some(local) = pending_set.take() {
                if matches!(op, Operator::LocalGet { local_index } if local_index == local) {
                    continue;
                }
                // The set ended the expression.
                window.clear();
                at_entry = false;
            }
            let reduced = match op {
                Operator::GlobalGet { global_index } => Op::GlobalGet(global_index),
                Operator::I32Const { value } => Op::Const(value),
                Operator::I32Sub => Op::Sub,
                Operator::I32Add => Op::Add,
                Operator::I32And => Op::And,
                Operator::LocalGet { local_index } => Op::LocalGet(local_index),
                Operator::LocalTee { local_index } | Operator::LocalSet { local_index } => {
                    if let Some(global) = value_of_sp(&window) {
                        from_sp.insert((global, local_index));
                    }
                    if matches!(op, Operator::LocalSet { .. }) {
                        pending_set = Some(local_index);
                    }
                    // A tee keeps the value on the operand stack: the expression goes on.
                    continue;
                }
                Operator::GlobalSet { global_index } => {
                    match decrement(&window) {
                        Some(d) if d.global == global_index => match d.amount {
                            Some(frame) if at_entry && d.start == 0 => {
                                shape.prologue = Some((global_index, frame));
                                if d.aligned {
                                    self.decremented_otherwise.insert(global_index);
                                }
                            }
                            _ => {
                                self.decremented_otherwise.insert(global_index);
                            }
                        },
                        _ if restores(&window, global_index, &from_sp) => {}
                        _ => {
                            self.written_otherwise.insert(global_index);
                        }
                    }
                    at_entry = false;
                    window.clear();
                    continue;
                }
                _ => Op::Other,
            };
            if reduced == Op::Other {
                at_entry = false;
                window.clear();
            } else {
                if window.len() == WINDOW {
                    window.remove(0);
                    at_entry = false;
                }
                window.push(reduced);
            }
        }
        Ok(shape)
    }

    /// The module's stack layout, if its stack pointer is understood.
    fn finish(self, bytes: Range<usize>) -> Option<ModuleStack> {
        let defined = |g: u32| g.checked_sub(self.imported_globals).map(|i| i as usize);
        let initial_of = |g: u32| defined(g).and_then(|i| self.globals.get(i).copied().flatten());
        // The stack pointer: the global named so, else the one most prologues decrement.
        let named = self
            .global_names
            .iter()
            .find(|(_, name)| name.as_str() == "__stack_pointer")
            .map(|(g, _)| *g);
        let sp = named.or_else(|| {
            let mut counts: HashMap<u32, usize> = HashMap::new();
            for (g, _) in self.bodies.iter().filter_map(|b| b.prologue) {
                *counts.entry(g).or_default() += 1;
            }
            counts.into_iter().max_by_key(|(_, n)| *n).map(|(g, _)| g)
        })?;
        let initial = u32::try_from(initial_of(sp)?).ok().filter(|i| *i > 0)?;
        if self.written_otherwise.contains(&sp) {
            return None;
        }
        let bodies: Vec<Body> = self
            .bodies
            .iter()
            .map(|b| Body {
                start: b.start,
                end: b.end,
                frame: match b.prologue {
                    Some((g, frame)) if g == sp => frame,
                    _ => 0,
                },
            })
            .collect();
        if bodies.iter().all(|b| b.frame == 0) {
            return None;
        }
        Some(ModuleStack {
            bytes,
            initial,
            exact: !self.decremented_otherwise.contains(&sp),
            imported_funcs: self.imported_funcs,
            bodies,
        })
    }
}

/// How many reduced operators a body's reading keeps: the longest pattern is 6.
const WINDOW: usize = 8;

/// The global whose value the expression ending `window` is: a plain `global.get $sp`, or a
/// decrement of it.
fn value_of_sp(window: &[Op]) -> Option<u32> {
    match window.last() {
        Some(Op::GlobalGet(g)) => Some(*g),
        _ => decrement(window).map(|d| d.global),
    }
}

/// A decrement of a global: `global.get $g`, minus an amount, perhaps aligned down.
struct Decrement {
    global: u32,
    /// Where the expression starts in the window.
    start: usize,
    /// The constant amount; `None` when computed (an `alloca`).
    amount: Option<u32>,
    /// Whether the result is aligned down (`i32.and`), which may take a few bytes more.
    aligned: bool,
}

/// Whether the expression ending `window` decrements a global.
fn decrement(window: &[Op]) -> Option<Decrement> {
    let (rest, aligned) = match window {
        [head @ .., Op::Const(_), Op::And] => (head, true),
        all => (all, false),
    };
    let (global, amount) = match rest {
        [.., Op::GlobalGet(g), Op::Const(n), Op::Sub] => (*g, Some(u32::try_from(*n).ok()?)),
        [.., Op::GlobalGet(g), Op::LocalGet(_), Op::Sub] => (*g, None),
        _ => return None,
    };
    Some(Decrement {
        global,
        start: rest.len() - 3,
        amount,
        aligned,
    })
}

/// Whether the expression ending `window` (before a `global.set global`) puts back a value
/// derived from that global: an epilogue.
fn restores(window: &[Op], global: u32, from_sp: &HashSet<(u32, u32)>) -> bool {
    match window {
        [.., Op::LocalGet(l), Op::Const(_), Op::Add] | [.., Op::LocalGet(l)] => {
            from_sp.contains(&(global, *l))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use wasmtime::Trap;
    use wasmtime::component::{Component, Linker};

    use super::*;
    use crate::delivery::netpolicy::NetPolicy;
    use crate::model::{Event, Plugin};
    use crate::plugins::dry_run::{DryRun, MemoryKv};
    use crate::plugins::invoke::Input;
    use crate::plugins::{PluginRuntime, engine};

    /// A component whose core module keeps an LLVM-style stack of 16 KiB, from address 16384
    /// down to 0, in one page of memory; each export takes the stack pointer as a guest would.
    const GUEST: &str = r#"
        (component
          (core module $m
            (memory 1)
            (global $__stack_pointer (mut i32) (i32.const 16384))
            ;; Recursion with 4 KiB frames, each zeroed by `memory.fill` as LLVM does.
            (func $big (param i32) (result i32)
              (local $fp i32)
              global.get $__stack_pointer
              i32.const 4096
              i32.sub
              local.tee $fp
              global.set $__stack_pointer
              local.get $fp
              i32.const 0
              i32.const 4096
              memory.fill
              local.get 0
              i32.const 1
              i32.add
              call $big
              local.get $fp
              i32.const 4096
              i32.add
              global.set $__stack_pointer)
            ;; 64-byte frames, then an access that is out of bounds for another reason.
            (func $fill (param $address i32)
              (local $fp i32)
              global.get $__stack_pointer
              i32.const 64
              i32.sub
              local.tee $fp
              global.set $__stack_pointer
              local.get $address
              i32.const 0
              i32.const 4096
              memory.fill
              local.get $fp
              i32.const 64
              i32.add
              global.set $__stack_pointer)
            (func $store (param $address i32)
              (local $fp i32)
              global.get $__stack_pointer
              i32.const 64
              i32.sub
              local.tee $fp
              global.set $__stack_pointer
              local.get $address
              i32.const 1
              i32.store
              local.get $fp
              i32.const 64
              i32.add
              global.set $__stack_pointer)
            (func (export "overflow") (result i32) i32.const 0 call $big)
            (func (export "fill-past-end") i32.const 65000 call $fill)
            ;; A wild pointer, as a wrapped stack pointer would be.
            (func (export "store-far") i32.const -16 call $store)
            (func (export "fine") i32.const 1024 call $fill i32.const 1024 call $store)
          )
          (core instance $i (instantiate $m))
          (func (export "overflow") (result s32) (canon lift (core func $i "overflow")))
          (func (export "fill-past-end") (canon lift (core func $i "fill-past-end")))
          (func (export "store-far") (canon lift (core func $i "store-far")))
          (func (export "fine") (canon lift (core func $i "fine")))
        )"#;

    /// Calls `export` of the `GUEST` component; its error, if it trapped.
    fn call(wasm: &[u8], export: &str) -> Option<wasmtime::Error> {
        let engine = engine::for_compiling().unwrap();
        let component = Component::new(&engine, wasm).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        // The engine interrupts at epochs, and nothing advances them here.
        store.set_epoch_deadline(1);
        let instance = Linker::new(&engine)
            .instantiate(&mut store, &component)
            .unwrap();
        let func = instance.get_func(&mut store, export).unwrap();
        let mut results =
            vec![wasmtime::component::Val::Bool(false); func.ty(&store).results().len()];
        func.call(&mut store, &[], &mut results).err()
    }

    #[test]
    fn a_prologue_gives_the_frame_and_the_global_the_stack() {
        let wasm = wat::parse_str(GUEST).unwrap();
        let map = StackMap::of_component(&wasm);
        assert_eq!(map.modules.len(), 1);
        let module = &map.modules[0];
        assert_eq!(module.initial, 16384);
        let frames: Vec<u32> = module.bodies.iter().map(|b| b.frame).collect();
        assert_eq!(frames, [4096, 64, 64, 0, 0, 0, 0]);
        assert!(module.exact);
    }

    #[test]
    fn an_overflow_trapping_in_a_bulk_instruction_is_recognized() {
        let wasm = wat::parse_str(GUEST).unwrap();
        let map = StackMap::of_component(&wasm);
        let err = call(&wasm, "overflow").expect("it traps");
        assert_eq!(err.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds));
        // No address to go by: the trap is in `memory.fill`.
        assert!(!format!("{err:?}").contains("wasm address"), "{err:?}");
        assert_eq!(map.overflowed(&err), Some(true), "{err:?}");
    }

    #[test]
    fn other_out_of_bounds_accesses_are_not_overflows() {
        let wasm = wat::parse_str(GUEST).unwrap();
        let map = StackMap::of_component(&wasm);
        assert!(call(&wasm, "fine").is_none());
        for export in ["fill-past-end", "store-far"] {
            let err = call(&wasm, export).expect("it traps");
            assert_eq!(
                err.downcast_ref::<Trap>(),
                Some(&Trap::MemoryOutOfBounds),
                "{export}"
            );
            assert_eq!(map.overflowed(&err), Some(false), "{export}: {err:?}");
        }
        // The store says where it faulted: far above memory, where a wrapped stack pointer
        // points too, yet the frames show the stack was fine.
        let far = call(&wasm, "store-far").unwrap();
        assert!(
            format!("{far:?}").contains("wasm address 0xfffffff0"),
            "{far:?}"
        );
    }

    #[test]
    fn frames_of_inexact_sizes_prove_only_an_overflow() {
        // `$fill` aligns its frame down to 32 bytes: its size is 64 bytes or a few more.
        let wasm = wat::parse_str(GUEST.replacen(
            "i32.const 64\n              i32.sub",
            "i32.const 64\n              i32.sub i32.const -32 i32.and",
            1,
        ))
        .unwrap();
        let map = StackMap::of_component(&wasm);
        assert!(!map.modules[0].exact);
        let overflow = call(&wasm, "overflow").unwrap();
        assert_eq!(map.overflowed(&overflow), Some(true));
        let past_end = call(&wasm, "fill-past-end").unwrap();
        assert_eq!(map.overflowed(&past_end), None);
    }

    #[test]
    fn a_module_whose_stack_pointer_is_switched_is_not_analysed() {
        // `set-stack` moves the stack elsewhere (as coroutine libraries do): frames on the
        // backtrace no longer tell where the pointer is.
        let wasm = wat::parse_str(GUEST.replacen(
            r#"(func (export "overflow")"#,
            r#"(func (export "set-stack") (param i32) local.get 0 global.set $__stack_pointer)
               (func (export "overflow")"#,
            1,
        ))
        .unwrap();
        assert!(StackMap::of_component(&wasm).modules.is_empty());
    }

    #[test]
    fn a_module_instantiated_twice_is_not_analysed() {
        let wasm = wat::parse_str(GUEST.replace(
            "(core instance $i (instantiate $m))",
            "(core instance $i (instantiate $m)) (core instance $j (instantiate $m))",
        ))
        .unwrap();
        assert!(StackMap::of_component(&wasm).modules.is_empty());
    }

    #[test]
    fn the_rust_fixture_is_read() {
        let wasm = std::fs::read(wasmhook_plugin_artifacts::HOSTILE).unwrap();
        let map = StackMap::of_component(&wasm);
        let [module] = map.modules.as_slice() else {
            panic!("one module with a stack: {map:?}")
        };
        // The artifacts are linked with a 256 KiB stack; `recurse_with_big_frames` has two
        // 16 KiB arrays in its frame.
        assert_eq!(module.initial, 256 * 1024);
        assert!(module.bodies.iter().any(|b| b.frame == 32 * 1024));
        // No `alloca` and no over-aligned frame: the frames on a backtrace tell exactly where
        // the stack pointer is, so a wild pointer is told from an overflow too.
        assert!(module.exact);
    }

    /// Both ways the hostile fixture runs out of stack are reported as a stack overflow: small
    /// frames fault at an address below 0, 16 KiB frames in a `memory.copy`.
    #[tokio::test]
    async fn the_hostile_fixtures_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = PluginRuntime::new(
            dir.path(),
            4,
            crate::plugins::budget::default_budget(),
            Default::default(),
            Arc::new(NetPolicy::new(vec![])),
        )
        .unwrap();
        let wasm = std::fs::read(wasmhook_plugin_artifacts::HOSTILE).unwrap();
        let event = Event {
            seq: 0,
            id: "evt_1".into(),
            event_type: "x".into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            occurred_at: "2026-11-28T00:00:00Z".into(),
            received_at: 0,
            causation: None,
        };
        for mode in ["stack-overflow", "big-frames"] {
            let plugin = Plugin {
                id: "plg_1".into(),
                account_id: "acc_1".into(),
                name: mode.into(),
                config: BTreeMap::from([("mode".to_string(), mode.to_string())]),
                secret_keys: Default::default(),
                allowed_hosts: vec![],
                limits: Default::default(),
                log_level: Default::default(),
                instances: Default::default(),
                version: 1,
                latest_version: 1,
                status: Default::default(),
                failure: None,
                created_at: 0,
                updated_at: 0,
            };
            let loaded = Arc::new(runtime.load_local(&plugin, &wasm).unwrap());
            let services = Arc::new(DryRun::new(Arc::new(MemoryKv::new(BTreeMap::new()))));
            let input = Input {
                event: &event,
                subscription_id: "sub_1",
                attempt: 1,
            };
            let err = runtime
                .invoke_loaded(services, loaded, input)
                .await
                .expect_err("it overflows");
            assert_eq!(err.message, "stack overflow", "{mode}");
        }
    }
}
