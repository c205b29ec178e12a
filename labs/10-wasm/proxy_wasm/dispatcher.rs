//! Calls from Envoy into the filter: the `proxy_on_*` functions the module exports.
//! Each names a context by its id; the dispatcher keeps the contexts and hands each
//! call to the right one. A context is taken out of the table for the call and put
//! back after it, so a callback may itself use the dispatcher (through hostcalls).

use crate::traits::{HttpContext, RootContext};
use crate::types::*;
use std::cell::RefCell;
use std::collections::HashMap;

struct EmptyRoot;
impl crate::traits::Context for EmptyRoot {}
impl RootContext for EmptyRoot {}

#[derive(Default)]
struct Dispatcher {
    root_factory: Option<fn(u32) -> Box<dyn RootContext>>,
    http_factory: Option<fn(u32, u32) -> Box<dyn HttpContext>>,
    roots: HashMap<u32, Box<dyn RootContext>>,
    streams: HashMap<u32, Box<dyn HttpContext>>,
}

thread_local! {
    static DISPATCHER: RefCell<Dispatcher> = RefCell::new(Dispatcher::default());
}

pub(crate) fn set_root_context(factory: fn(u32) -> Box<dyn RootContext>) {
    DISPATCHER.with(|d| d.borrow_mut().root_factory = Some(factory));
}

pub(crate) fn set_http_context(factory: fn(u32, u32) -> Box<dyn HttpContext>) {
    DISPATCHER.with(|d| d.borrow_mut().http_factory = Some(factory));
}

fn with_root<T>(id: u32, default: T, call: impl FnOnce(&mut Box<dyn RootContext>) -> T) -> T {
    let taken = DISPATCHER.with(|d| d.borrow_mut().roots.remove(&id));
    match taken {
        Some(mut root) => {
            let answer = call(&mut root);
            DISPATCHER.with(|d| d.borrow_mut().roots.insert(id, root));
            answer
        }
        None => default,
    }
}

fn with_stream<T>(id: u32, default: T, call: impl FnOnce(&mut Box<dyn HttpContext>) -> T) -> T {
    let taken = DISPATCHER.with(|d| d.borrow_mut().streams.remove(&id));
    match taken {
        Some(mut stream) => {
            let answer = call(&mut stream);
            DISPATCHER.with(|d| d.borrow_mut().streams.insert(id, stream));
            answer
        }
        None => default,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        let factory = DISPATCHER.with(|d| d.borrow().root_factory);
        let root: Box<dyn RootContext> = match factory {
            Some(make) => make(context_id),
            None => Box::new(EmptyRoot),
        };
        DISPATCHER.with(|d| d.borrow_mut().roots.insert(context_id, root));
        return;
    }
    let factory = DISPATCHER.with(|d| d.borrow().http_factory);
    let stream = match factory {
        Some(make) => Some(make(context_id, root_context_id)),
        None => with_root(root_context_id, None, |root| match root.get_type() {
            Some(ContextType::HttpContext) => root.create_http_context(context_id),
            _ => None,
        }),
    };
    match stream {
        Some(stream) => {
            DISPATCHER.with(|d| d.borrow_mut().streams.insert(context_id, stream));
        }
        None => panic!("no HTTP context for stream {}: call set_http_context, or have the root context's \
                        get_type() return Some(ContextType::HttpContext)", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, vm_configuration_size: usize) -> u32 {
    with_root(context_id, true, |root| root.on_vm_start(vm_configuration_size)) as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> u32 {
    with_root(context_id, true, |root| root.on_configure(plugin_configuration_size)) as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, num_headers: usize, end_of_stream: u32) -> Action {
    with_stream(context_id, Action::Continue, |s| s.on_http_request_headers(num_headers, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> Action {
    with_stream(context_id, Action::Continue, |s| s.on_http_request_body(body_size, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, num_trailers: usize) -> Action {
    with_stream(context_id, Action::Continue, |s| s.on_http_request_trailers(num_trailers))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, num_headers: usize, end_of_stream: u32) -> Action {
    with_stream(context_id, Action::Continue, |s| s.on_http_response_headers(num_headers, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: u32) -> Action {
    with_stream(context_id, Action::Continue, |s| s.on_http_response_body(body_size, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, num_trailers: usize) -> Action {
    with_stream(context_id, Action::Continue, |s| s.on_http_response_trailers(num_trailers))
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with_stream(context_id, (), |s| s.on_log());
}

#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    let stream = with_stream(context_id, None, |s| Some(s.on_done()));
    let done = stream.unwrap_or_else(|| with_root(context_id, true, |r| r.on_done()));
    done as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    DISPATCHER.with(|d| {
        let mut d = d.borrow_mut();
        d.streams.remove(&context_id);
        d.roots.remove(&context_id);
    });
}
