//! The `env.proxy_*` host functions, and the linker that resolves every
//! import of a module: WASI preview1 from wasmtime-wasi, the functions below,
//! an `Unimplemented` stub for any other `env.proxy_*`, and a loud error for
//! anything else.
//!
//! Semantics follow Envoy where it differs from (or is more specific than) the
//! spec; each such place says so.

use wasmtime::{Caller, Engine, ExternType, Linker, Module, Result, Val, ValType};

use super::abi::{self, BufferType, LogLevel, MapType, MetricType, Pairs, Status, StreamType};
use super::memory::{self, return_bytes, MemResult};
use super::shared::SetError;
use super::state::{CallState, Headers, HostState, HttpCall, LocalResponse, Resume};

type C<'a> = Caller<'a, HostState>;

/// Host functions this harness implements (everything else under `env.proxy_`
/// gets an `Unimplemented` stub).
const IMPLEMENTED: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

/// Builds a linker that resolves every import of `module`, or an error naming
/// the first import from a module the harness does not know.
pub(crate) fn linker_for(engine: &Engine, module: &Module) -> Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut HostState| &mut state.wasi)?;
    define_proxy_functions(&mut linker)?;
    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
        match module_name {
            "wasi_snapshot_preview1" => {}
            "env" if name.starts_with("proxy_") => {
                if IMPLEMENTED.contains(&name) {
                    continue;
                }
                let ExternType::Func(ty) = import.ty() else {
                    wasmtime::bail!("import env.{name} is not a function");
                };
                let stub_name = name.to_string();
                linker.func_new("env", name, ty.clone(), move |mut caller, _params, results| {
                    caller.data_mut().unimplemented.push(stub_name.clone());
                    for (slot, ty) in results.iter_mut().zip(ty.results()) {
                        *slot = match ty {
                            ValType::I32 => Val::I32(Status::Unimplemented.code()),
                            ValType::I64 => Val::I64(0),
                            ValType::F32 => Val::F32(0),
                            ValType::F64 => Val::F64(0),
                            _ => Val::null_func_ref(),
                        };
                    }
                    Ok(())
                })?;
            }
            other => wasmtime::bail!(
                "the module imports `{other}.{name}`, which the harness does not provide \
                 (only wasi_snapshot_preview1.* and env.proxy_* exist in Envoy)"
            ),
        }
    }
    Ok(linker)
}

fn define_proxy_functions(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", proxy_get_current_time_nanoseconds)?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", proxy_set_tick_period_milliseconds)?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_buffer_status", proxy_get_buffer_status)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", proxy_get_header_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_size", proxy_get_header_map_size)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", proxy_set_header_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", proxy_get_header_map_value)?;
    linker.func_wrap("env", "proxy_add_header_map_value", proxy_add_header_map_value)?;
    linker.func_wrap("env", "proxy_replace_header_map_value", proxy_replace_header_map_value)?;
    linker.func_wrap("env", "proxy_remove_header_map_value", proxy_remove_header_map_value)?;
    linker.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    linker.func_wrap("env", "proxy_set_property", proxy_set_property)?;
    linker.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", proxy_set_shared_data)?;
    linker.func_wrap("env", "proxy_register_shared_queue", proxy_register_shared_queue)?;
    linker.func_wrap("env", "proxy_resolve_shared_queue", proxy_resolve_shared_queue)?;
    linker.func_wrap("env", "proxy_enqueue_shared_queue", proxy_enqueue_shared_queue)?;
    linker.func_wrap("env", "proxy_dequeue_shared_queue", proxy_dequeue_shared_queue)?;
    linker.func_wrap("env", "proxy_continue_stream", proxy_continue_stream)?;
    linker.func_wrap("env", "proxy_close_stream", proxy_close_stream)?;
    linker.func_wrap("env", "proxy_send_local_response", proxy_send_local_response)?;
    linker.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    linker.func_wrap("env", "proxy_set_effective_context", proxy_set_effective_context)?;
    linker.func_wrap("env", "proxy_done", proxy_done)?;
    linker.func_wrap("env", "proxy_define_metric", proxy_define_metric)?;
    linker.func_wrap("env", "proxy_get_metric", proxy_get_metric)?;
    linker.func_wrap("env", "proxy_record_metric", proxy_record_metric)?;
    linker.func_wrap("env", "proxy_increment_metric", proxy_increment_metric)?;
    Ok(())
}

/// Folds a status-or-memory-error into the i32 the guest receives.
fn code(result: MemResult<Status>) -> Result<i32> {
    Ok(match result {
        Ok(status) | Err(status) => status.code(),
    })
}

// ---- logging, time, timers ------------------------------------------------

fn proxy_log(mut caller: C<'_>, level: i32, ptr: i32, len: i32) -> Result<i32> {
    code((|| {
        let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
        let message = memory::read_str(&mut caller, ptr, len)?;
        caller.data_mut().log(level, message);
        Ok(Status::Ok)
    })())
}

fn proxy_get_log_level(mut caller: C<'_>, ret: i32) -> Result<i32> {
    let level = caller.data().log_level.code();
    code(memory::write_u32(&mut caller, ret, level).map(|()| Status::Ok))
}

fn proxy_get_current_time_nanoseconds(mut caller: C<'_>, ret: i32) -> Result<i32> {
    let now = caller.data().clock.nanos();
    code(memory::write_u64(&mut caller, ret, now).map(|()| Status::Ok))
}

fn proxy_set_tick_period_milliseconds(mut caller: C<'_>, period: i32) -> Result<i32> {
    caller.data_mut().tick_period_ms = period as u32;
    Ok(Status::Ok.code())
}

// ---- buffers ---------------------------------------------------------------

/// The buffer `raw` names in the current context, and whether the module may
/// write it. Configuration buffers exist only during their callback, the call
/// response only during `proxy_on_http_call_response` (as in Envoy).
fn buffer_mut(state: &mut HostState, raw: i32) -> MemResult<(&mut Vec<u8>, bool)> {
    let buffer = BufferType::from_raw(raw).ok_or(Status::BadArgument)?;
    match buffer {
        BufferType::HttpRequestBody => {
            let stream = state.effective_stream().ok_or(Status::NotFound)?;
            Ok((&mut stream.request.body, true))
        }
        BufferType::HttpResponseBody => {
            let stream = state.effective_stream().ok_or(Status::NotFound)?;
            Ok((&mut stream.response.body, true))
        }
        BufferType::HttpCallResponseBody => state
            .call_response
            .as_mut()
            .map(|call| (&mut call.body, false))
            .ok_or(Status::NotFound),
        BufferType::VmConfiguration if state.in_vm_start => Ok((&mut state.vm_config, false)),
        BufferType::PluginConfiguration if state.in_configure => {
            Ok((&mut state.plugin_config, false))
        }
        _ => Err(Status::NotFound),
    }
}

fn proxy_get_buffer_bytes(
    mut caller: C<'_>,
    buffer: i32,
    start: i32,
    max_size: i32,
    ret_data: i32,
    ret_size: i32,
) -> Result<i32> {
    let slice = {
        let (bytes, _) = match buffer_mut(caller.data_mut(), buffer) {
            Ok(found) => found,
            Err(status) => return Ok(status.code()),
        };
        // Envoy computes in 64 bits, so start + max_size never overflows, and
        // clamps the length to what the buffer holds.
        let start = u64::from(start as u32);
        let end = start.saturating_add(u64::from(max_size as u32)).min(bytes.len() as u64);
        if start > bytes.len() as u64 {
            return Ok(Status::BadArgument.code());
        }
        bytes.get(start as usize..end as usize).unwrap_or_default().to_vec()
    };
    if slice.is_empty() {
        // Envoy returns Ok without touching the out-pointers.
        return Ok(Status::Ok.code());
    }
    Ok(return_bytes(&mut caller, &slice, ret_data, ret_size)?.code())
}

fn proxy_get_buffer_status(mut caller: C<'_>, buffer: i32, ret_size: i32, ret_flags: i32) -> Result<i32> {
    let len = match buffer_mut(caller.data_mut(), buffer) {
        Ok((bytes, _)) => bytes.len() as u32,
        Err(status) => return Ok(status.code()),
    };
    code(
        memory::write_u32(&mut caller, ret_size, len)
            .and_then(|()| memory::write_u32(&mut caller, ret_flags, 0))
            .map(|()| Status::Ok),
    )
}

/// Envoy's `Buffer::copyFrom`: `start == 0` drains `size` bytes then prepends
/// the value (so `(0, len)` replaces everything); `start >= len` appends;
/// anything in between is refused with `BadArgument`, although the spec
/// describes a general splice.
fn proxy_set_buffer_bytes(
    mut caller: C<'_>,
    buffer: i32,
    start: i32,
    size: i32,
    data: i32,
    len: i32,
) -> Result<i32> {
    code((|| {
        let value = memory::read(&mut caller, data, len)?;
        let (bytes, writable) = buffer_mut(caller.data_mut(), buffer)?;
        if !writable {
            return Err(Status::Unimplemented);
        }
        let start = start as u32 as usize;
        if start == 0 {
            let drain = (size as u32 as usize).min(bytes.len());
            let mut replaced = value;
            replaced.extend_from_slice(bytes.get(drain..).unwrap_or_default());
            *bytes = replaced;
        } else if start >= bytes.len() {
            bytes.extend_from_slice(&value);
        } else {
            return Err(Status::BadArgument);
        }
        Ok(Status::Ok)
    })())
}

// ---- header maps -----------------------------------------------------------

fn map_mut(state: &mut HostState, raw: i32) -> MemResult<&mut Pairs> {
    let map = MapType::from_raw(raw).ok_or(Status::BadArgument)?;
    match map {
        MapType::HttpCallResponseHeaders => {
            state.call_response.as_mut().map(|c| &mut c.headers).ok_or(Status::NotFound)
        }
        MapType::HttpCallResponseTrailers => {
            state.call_response.as_mut().map(|c| &mut c.trailers).ok_or(Status::NotFound)
        }
        MapType::HttpRequestHeaders
        | MapType::HttpRequestTrailers
        | MapType::HttpResponseHeaders
        | MapType::HttpResponseTrailers => {
            let stream = state.effective_stream().ok_or(Status::NotFound)?;
            Ok(match map {
                MapType::HttpRequestHeaders => &mut stream.request.headers,
                MapType::HttpRequestTrailers => &mut stream.request.trailers,
                MapType::HttpResponseHeaders => &mut stream.response.headers,
                _ => &mut stream.response.trailers,
            })
        }
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => {
            Err(Status::NotFound)
        }
    }
}

fn proxy_get_header_map_pairs(mut caller: C<'_>, map: i32, ret_data: i32, ret_size: i32) -> Result<i32> {
    let serialized = match map_mut(caller.data_mut(), map) {
        Ok(pairs) => abi::serialize_map(pairs),
        Err(status) => return Ok(status.code()),
    };
    Ok(return_bytes(&mut caller, &serialized, ret_data, ret_size)?.code())
}

fn proxy_get_header_map_size(mut caller: C<'_>, map: i32, ret_size: i32) -> Result<i32> {
    let size = match map_mut(caller.data_mut(), map) {
        Ok(pairs) => abi::serialize_map(pairs).len() as u32,
        Err(status) => return Ok(status.code()),
    };
    code(memory::write_u32(&mut caller, ret_size, size).map(|()| Status::Ok))
}

fn proxy_set_header_map_pairs(mut caller: C<'_>, map: i32, data: i32, len: i32) -> Result<i32> {
    code((|| {
        let bytes = memory::read(&mut caller, data, len)?;
        let new = abi::deserialize_map(&bytes).ok_or(Status::BadArgument)?;
        let pairs = map_mut(caller.data_mut(), map)?;
        *pairs = new.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Ok(Status::Ok)
    })())
}

fn proxy_get_header_map_value(
    mut caller: C<'_>,
    map: i32,
    key: i32,
    key_len: i32,
    ret_data: i32,
    ret_size: i32,
) -> Result<i32> {
    let found = (|| {
        let key = memory::read_str(&mut caller, key, key_len)?.to_ascii_lowercase();
        let pairs = map_mut(caller.data_mut(), map)?;
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .ok_or(Status::NotFound)
    })();
    match found {
        Ok(value) => Ok(return_bytes(&mut caller, &value, ret_data, ret_size)?.code()),
        Err(status) => Ok(status.code()),
    }
}

fn proxy_add_header_map_value(
    mut caller: C<'_>,
    map: i32,
    key: i32,
    key_len: i32,
    value: i32,
    value_len: i32,
) -> Result<i32> {
    code((|| {
        let key = memory::read_str(&mut caller, key, key_len)?.to_ascii_lowercase();
        let value = memory::read(&mut caller, value, value_len)?;
        map_mut(caller.data_mut(), map)?.push((key, value));
        Ok(Status::Ok)
    })())
}

/// Envoy's `setCopy`: the first occurrence takes the value, later ones go.
fn proxy_replace_header_map_value(
    mut caller: C<'_>,
    map: i32,
    key: i32,
    key_len: i32,
    value: i32,
    value_len: i32,
) -> Result<i32> {
    code((|| {
        let key = memory::read_str(&mut caller, key, key_len)?.to_ascii_lowercase();
        let value = memory::read(&mut caller, value, value_len)?;
        let pairs = map_mut(caller.data_mut(), map)?;
        match pairs.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                let mut index = 0;
                pairs.retain(|(k, _)| {
                    let keep = *k != key || index == first;
                    index += 1;
                    keep
                });
                if let Some(slot) = pairs.get_mut(first) {
                    slot.1 = value;
                }
            }
            None => pairs.push((key, value)),
        }
        Ok(Status::Ok)
    })())
}

fn proxy_remove_header_map_value(mut caller: C<'_>, map: i32, key: i32, key_len: i32) -> Result<i32> {
    code((|| {
        let key = memory::read_str(&mut caller, key, key_len)?.to_ascii_lowercase();
        map_mut(caller.data_mut(), map)?.retain(|(k, _)| *k != key);
        Ok(Status::Ok)
    })())
}

// ---- properties ------------------------------------------------------------

/// Looks a property up: the effective stream's own, then the ones Envoy
/// derives from the request/response headers, then the sandbox-wide ones.
pub(crate) fn lookup_property(state: &mut HostState, path: &[String]) -> Option<Vec<u8>> {
    if let Some(stream) = state.effective_stream() {
        if let Some(value) = stream.properties.get(path) {
            return Some(value.clone());
        }
        let header = |pairs: &Pairs, name: &str| {
            pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        };
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let derived = match segments.as_slice() {
            ["request", "path"] => header(&stream.request.headers, ":path"),
            ["request", "url_path"] => header(&stream.request.headers, ":path").map(|p| {
                let end = p.iter().position(|b| *b == b'?').unwrap_or(p.len());
                p.get(..end).unwrap_or_default().to_vec()
            }),
            ["request", "method"] => header(&stream.request.headers, ":method"),
            ["request", "host"] => header(&stream.request.headers, ":authority"),
            ["request", "scheme"] => header(&stream.request.headers, ":scheme"),
            ["request", "headers", name] => header(&stream.request.headers, name),
            ["response", "headers", name] => header(&stream.response.headers, name),
            // Envoy serializes integer properties as 8-byte little-endian.
            ["response", "code"] => header(&stream.response.headers, ":status")
                .and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok())
                .map(|code| code.to_le_bytes().to_vec()),
            _ => None,
        };
        if derived.is_some() {
            return derived;
        }
    }
    state.properties.get(path).cloned()
}

fn proxy_get_property(mut caller: C<'_>, path: i32, path_len: i32, ret_data: i32, ret_size: i32) -> Result<i32> {
    let found = (|| {
        let path = abi::split_property_path(&memory::read(&mut caller, path, path_len)?);
        lookup_property(caller.data_mut(), &path).ok_or(Status::NotFound)
    })();
    match found {
        Ok(value) => Ok(return_bytes(&mut caller, &value, ret_data, ret_size)?.code()),
        Err(status) => Ok(status.code()),
    }
}

fn proxy_set_property(mut caller: C<'_>, path: i32, path_len: i32, value: i32, value_len: i32) -> Result<i32> {
    code((|| {
        let path = abi::split_property_path(&memory::read(&mut caller, path, path_len)?);
        let value = memory::read(&mut caller, value, value_len)?;
        let state = caller.data_mut();
        match state.effective_stream() {
            Some(stream) => {
                stream.properties.insert(path, value);
            }
            None => {
                state.properties.insert(path, value);
            }
        }
        Ok(Status::Ok)
    })())
}

// ---- shared data and queues ------------------------------------------------

fn proxy_get_shared_data(
    mut caller: C<'_>,
    key: i32,
    key_len: i32,
    ret_data: i32,
    ret_size: i32,
    ret_cas: i32,
) -> Result<i32> {
    let found: MemResult<Vec<u8>> = (|| {
        let key = memory::read_str(&mut caller, key, key_len)?;
        let (value, cas) = caller.data().shared.get(&key).ok_or(Status::NotFound)?;
        memory::write_u32(&mut caller, ret_cas, cas)?;
        Ok(value)
    })();
    match found {
        Ok(value) => Ok(return_bytes(&mut caller, &value, ret_data, ret_size)?.code()),
        Err(status) => Ok(status.code()),
    }
}

fn proxy_set_shared_data(mut caller: C<'_>, key: i32, key_len: i32, value: i32, value_len: i32, cas: i32) -> Result<i32> {
    code((|| {
        let key = memory::read_str(&mut caller, key, key_len)?;
        let value = memory::read(&mut caller, value, value_len)?;
        match caller.data().shared.set(&key, &value, cas as u32) {
            Ok(()) => Ok(Status::Ok),
            Err(SetError::CasMismatch) => Ok(Status::CasMismatch),
        }
    })())
}

fn proxy_register_shared_queue(mut caller: C<'_>, name: i32, name_len: i32, ret_id: i32) -> Result<i32> {
    code((|| {
        let name = memory::read_str(&mut caller, name, name_len)?;
        let state = caller.data();
        let id = state.shared.register_queue(&state.vm_id, &name);
        memory::write_u32(&mut caller, ret_id, id)?;
        Ok(Status::Ok)
    })())
}

fn proxy_resolve_shared_queue(
    mut caller: C<'_>,
    vm_id: i32,
    vm_id_len: i32,
    name: i32,
    name_len: i32,
    ret_id: i32,
) -> Result<i32> {
    code((|| {
        let mut vm_id = memory::read_str(&mut caller, vm_id, vm_id_len)?;
        let name = memory::read_str(&mut caller, name, name_len)?;
        if vm_id.is_empty() {
            vm_id = caller.data().vm_id.clone();
        }
        let id = caller.data().shared.resolve_queue(&vm_id, &name).ok_or(Status::NotFound)?;
        memory::write_u32(&mut caller, ret_id, id)?;
        Ok(Status::Ok)
    })())
}

fn proxy_enqueue_shared_queue(mut caller: C<'_>, id: i32, value: i32, value_len: i32) -> Result<i32> {
    code((|| {
        let value = memory::read(&mut caller, value, value_len)?;
        if caller.data().shared.enqueue(id as u32, &value) {
            Ok(Status::Ok)
        } else {
            Err(Status::NotFound)
        }
    })())
}

fn proxy_dequeue_shared_queue(mut caller: C<'_>, id: i32, ret_data: i32, ret_size: i32) -> Result<i32> {
    match caller.data().shared.dequeue(id as u32) {
        None => Ok(Status::NotFound.code()),
        Some(None) => Ok(Status::Empty.code()),
        Some(Some(value)) => Ok(return_bytes(&mut caller, &value, ret_data, ret_size)?.code()),
    }
}

// ---- stream control --------------------------------------------------------

/// Resumes a paused half. Inside a hook of that same half the resume takes
/// effect when the hook returns (as a Continue would).
fn proxy_continue_stream(mut caller: C<'_>, stream_type: i32) -> Result<i32> {
    let Some(stream_type) = StreamType::from_raw(stream_type) else {
        return Ok(Status::BadArgument.code());
    };
    let state = caller.data_mut();
    let context_id = state.effective;
    let Some(stream) = state.effective_stream() else {
        return Ok(Status::NotFound.code());
    };
    let in_hook = stream.in_hook;
    let Some(half) = stream.half_mut(stream_type) else {
        return Ok(Status::Unimplemented.code());
    };
    if in_hook == Some(stream_type) {
        half.resume_requested = true;
    } else if !half.ended {
        half.forward();
    }
    state.resumes.push(Resume {
        context_id,
        stream_type,
    });
    Ok(Status::Ok.code())
}

/// Envoy resets the whole HTTP stream: no further hooks for either half.
fn proxy_close_stream(mut caller: C<'_>, stream_type: i32) -> Result<i32> {
    if StreamType::from_raw(stream_type).is_none() {
        return Ok(Status::BadArgument.code());
    }
    let Some(stream) = caller.data_mut().effective_stream() else {
        return Ok(Status::NotFound.code());
    };
    stream.reset = true;
    stream.request.ended = true;
    stream.response.ended = true;
    Ok(Status::Ok.code())
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut caller: C<'_>,
    status: i32,
    details: i32,
    details_len: i32,
    body: i32,
    body_len: i32,
    headers: i32,
    headers_len: i32,
    grpc_status: i32,
) -> Result<i32> {
    code((|| {
        let details = memory::read_str(&mut caller, details, details_len)?;
        let body = memory::read(&mut caller, body, body_len)?;
        let headers = memory::read(&mut caller, headers, headers_len)?;
        let headers = abi::deserialize_map(&headers).ok_or(Status::BadArgument)?;
        let stream = caller.data_mut().effective_stream().ok_or(Status::NotFound)?;
        if stream.local_responses.is_empty() {
            stream.local_pending = true;
        }
        stream.local_responses.push(LocalResponse {
            status: status as u32,
            details,
            body,
            headers: Headers::from_pairs(&headers),
            grpc_status,
        });
        Ok(Status::Ok)
    })())
}

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut caller: C<'_>,
    upstream: i32,
    upstream_len: i32,
    headers: i32,
    headers_len: i32,
    body: i32,
    body_len: i32,
    trailers: i32,
    trailers_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> Result<i32> {
    code((|| {
        let upstream = memory::read_str(&mut caller, upstream, upstream_len)?;
        let headers = memory::read(&mut caller, headers, headers_len)?;
        let headers = abi::deserialize_map(&headers).ok_or(Status::BadArgument)?;
        let body = memory::read(&mut caller, body, body_len)?;
        let trailers = memory::read(&mut caller, trailers, trailers_len)?;
        let trailers = abi::deserialize_map(&trailers).ok_or(Status::BadArgument)?;
        let state = caller.data_mut();
        // Envoy: unknown cluster, or a missing :method/:path/:authority, is BadArgument.
        if let Some(known) = &state.known_upstreams {
            if !known.contains(&upstream) {
                return Err(Status::BadArgument);
            }
        }
        for required in [":method", ":path", ":authority"] {
            if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                return Err(Status::BadArgument);
            }
        }
        let token = state.next_token;
        state.next_token = state.next_token.wrapping_add(1).max(1);
        state.calls.push(HttpCall {
            token,
            context_id: state.effective,
            upstream,
            headers: Headers::from_pairs(&headers),
            body,
            trailers: Headers::from_pairs(&trailers),
            timeout_ms: timeout_ms as u32,
            state: CallState::Pending,
        });
        memory::write_u32(&mut caller, ret_token, token)?;
        Ok(Status::Ok)
    })())
}

fn proxy_set_effective_context(mut caller: C<'_>, context_id: i32) -> Result<i32> {
    let state = caller.data_mut();
    let id = context_id as u32;
    let live = id == state.root_id
        || state
            .streams
            .get(&id)
            .is_some_and(|s| !s.deleted);
    if !live {
        return Ok(Status::BadArgument.code());
    }
    state.effective = id;
    Ok(Status::Ok.code())
}

fn proxy_done(mut caller: C<'_>) -> Result<i32> {
    let state = caller.data_mut();
    let id = state.effective;
    match state.streams.get_mut(&id) {
        Some(stream) if stream.awaiting_done => {
            stream.done_called = true;
            Ok(Status::Ok.code())
        }
        _ => Ok(Status::NotFound.code()),
    }
}

// ---- metrics ---------------------------------------------------------------

fn proxy_define_metric(mut caller: C<'_>, kind: i32, name: i32, name_len: i32, ret_id: i32) -> Result<i32> {
    code((|| {
        let kind = MetricType::from_raw(kind).ok_or(Status::BadArgument)?;
        let name = memory::read_str(&mut caller, name, name_len)?;
        let id = caller.data().shared.define_metric(kind, &name);
        memory::write_u32(&mut caller, ret_id, id)?;
        Ok(Status::Ok)
    })())
}

fn proxy_get_metric(mut caller: C<'_>, id: i32, ret_value: i32) -> Result<i32> {
    code((|| {
        let value = caller.data().shared.get_metric(id as u32)?;
        memory::write_u64(&mut caller, ret_value, value)?;
        Ok(Status::Ok)
    })())
}

fn proxy_record_metric(caller: C<'_>, id: i32, value: i64) -> Result<i32> {
    Ok(caller.data().shared.record_metric(id as u32, value as u64).code())
}

fn proxy_increment_metric(caller: C<'_>, id: i32, delta: i64) -> Result<i32> {
    Ok(caller.data().shared.increment_metric(id as u32, delta).code())
}
