//! The course's small proxy-wasm module: the guest side of the proxy-wasm ABI 0.2.1,
//! for HTTP filters, written for this course because crates.io is out of reach.
//!
//! Its public names are those of the `proxy-wasm` crate (0.2): `traits::{Context,
//! HttpContext, RootContext}`, `types::{Action, LogLevel, ...}`, `set_log_level`,
//! `set_root_context`, `set_http_context`, `main!` and `hostcalls`. A filter written
//! against this module builds with the real crate unchanged (its `use` lines are the
//! same); only HTTP filters are covered, no timers, shared data or outbound calls.
//!
//!   dispatcher.rs  what Envoy calls (the `proxy_on_*` exports) -> your contexts
//!   hostcalls.rs   what your code calls (the `proxy_*` imports) -> Envoy
//!   traits.rs      the contexts you implement
//!   types.rs       the ABI's numbers with names

pub mod hostcalls;
pub mod traits;
pub mod types;
mod dispatcher;

use crate::traits::{HttpContext, RootContext};
use crate::types::LogLevel;

/// In the crate this also sets the level of the `log` crate's macros; here (no `log`
/// crate) it does what matters most: a panic's message goes to Envoy's log before the
/// module traps. Without it a panic shows only as "unreachable".
pub fn set_log_level(_level: LogLevel) {
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &info.to_string());
    }));
}

/// Envoy creates one root context per plugin: FACTORY makes it from its context id.
pub fn set_root_context(factory: fn(u32) -> Box<dyn RootContext>) {
    dispatcher::set_root_context(factory);
}

/// Envoy creates one HTTP context per stream: FACTORY makes it from (context id,
/// root context id). Without it, the root context's `create_http_context` is asked.
pub fn set_http_context(factory: fn(u32, u32) -> Box<dyn HttpContext>) {
    dispatcher::set_http_context(factory);
}

/// The module's start code: Envoy runs it once, when the VM starts, before any context
/// exists. `proxy_wasm::main! {{ proxy_wasm::set_root_context(...); }}`
#[macro_export]
macro_rules! main {
    ($code:block) => {
        #[no_mangle]
        pub extern "C" fn _initialize() {
            $code;
        }
    };
}

/// The ABI version this module speaks; Envoy refuses a module without this export.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Envoy copies strings and buffers into the module's memory: it asks for room here,
/// and the hostcalls take ownership of what it wrote.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut memory: Vec<u8> = Vec::with_capacity(size);
    let pointer = memory.as_mut_ptr();
    std::mem::forget(memory);
    pointer
}
