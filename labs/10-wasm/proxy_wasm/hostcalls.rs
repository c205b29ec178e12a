//! Calls from the filter into Envoy: the `proxy_*` functions Envoy provides to the
//! module (its imports), wrapped so that they take and return Rust values. Envoy never
//! sees Rust memory directly: it reads what a pointer and a length point at, and
//! returns data by writing a pointer and a length into two slots we pass.

use crate::types::*;
use std::ptr::null_mut;

extern "C" {
    fn proxy_log(level: LogLevel, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_buffer_bytes(buffer_type: BufferType, start: usize, max_size: usize,
                              return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: BufferType, start: usize, size: usize,
                              data: *const u8, data_size: usize) -> u32;
    fn proxy_get_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize,
                                  return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize,
                                      value_data: *const u8, value_size: usize) -> u32;
    fn proxy_add_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize,
                                  value_data: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_continue_stream(stream_type: StreamType) -> u32;
    fn proxy_send_local_response(status_code: u32, details_data: *const u8, details_size: usize,
                                 body_data: *const u8, body_size: usize,
                                 headers_data: *const u8, headers_size: usize, grpc_status: i32) -> u32;
}

fn result(status: u32) -> Result<(), Status> {
    match Status::from_u32(status) {
        Status::Ok => Ok(()),
        other => Err(other),
    }
}

/// Take ownership of what Envoy wrote into memory it got from `proxy_on_memory_allocate`.
unsafe fn take(data: *mut u8, size: usize) -> Option<Bytes> {
    if data.is_null() {
        Some(Vec::new())
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    unsafe { result(proxy_log(level, message.as_ptr(), message.len())) }
}

pub fn get_buffer(buffer_type: BufferType, start: usize, max_size: usize) -> Result<Option<Bytes>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    unsafe {
        match Status::from_u32(proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size)) {
            Status::Ok => Ok(take(data, size)),
            Status::NotFound | Status::Empty => Ok(None),
            other => Err(other),
        }
    }
}

pub fn set_buffer(buffer_type: BufferType, start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    unsafe { result(proxy_set_buffer_bytes(buffer_type, start, size, value.as_ptr(), value.len())) }
}

pub fn get_map_value(map_type: MapType, key: &str) -> Result<Option<String>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    unsafe {
        match Status::from_u32(proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut data, &mut size)) {
            Status::Ok => Ok(take(data, size).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())),
            Status::NotFound => Ok(None),
            other => Err(other),
        }
    }
}

/// Replace the value of KEY; None removes the header.
pub fn set_map_value(map_type: MapType, key: &str, value: Option<&str>) -> Result<(), Status> {
    unsafe {
        match value {
            Some(value) => result(proxy_replace_header_map_value(map_type, key.as_ptr(), key.len(),
                                                                 value.as_ptr(), value.len())),
            None => result(proxy_remove_header_map_value(map_type, key.as_ptr(), key.len())),
        }
    }
}

pub fn add_map_value(map_type: MapType, key: &str, value: &str) -> Result<(), Status> {
    unsafe { result(proxy_add_header_map_value(map_type, key.as_ptr(), key.len(), value.as_ptr(), value.len())) }
}

pub fn resume_http_request() -> Result<(), Status> {
    unsafe { result(proxy_continue_stream(StreamType::HttpRequest)) }
}

pub fn resume_http_response() -> Result<(), Status> {
    unsafe { result(proxy_continue_stream(StreamType::HttpResponse)) }
}

/// Answer the stream from the filter. Headers travel as the ABI's serialized map:
/// a count, each key and value length, then each key and value followed by a NUL.
pub fn send_http_response(status_code: u32, headers: Vec<(&str, &str)>, body: Option<&[u8]>) -> Result<(), Status> {
    let mut map: Vec<u8> = Vec::new();
    map.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (key, value) in &headers {
        map.extend_from_slice(&(key.len() as u32).to_le_bytes());
        map.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in &headers {
        map.extend_from_slice(key.as_bytes());
        map.push(0);
        map.extend_from_slice(value.as_bytes());
        map.push(0);
    }
    let body = body.unwrap_or(&[]);
    unsafe {
        result(proxy_send_local_response(status_code, null_mut(), 0, body.as_ptr(), body.len(),
                                         map.as_ptr(), map.len(), -1))
    }
}
