//! Reading and writing guest memory from inside host functions, and handing
//! buffers to the guest through its own allocator.

use wasmtime::{Caller, Result};

use super::abi::Status;
use super::state::HostState;

/// What a host function does with a memory problem: report
/// `InvalidMemoryAccess` to the guest, as the spec says.
pub(crate) type MemResult<T> = std::result::Result<T, Status>;

fn range(ptr: i32, len: i32) -> MemResult<std::ops::Range<usize>> {
    // Guest pointers and sizes are unsigned 32-bit values carried in i32.
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> MemResult<Vec<u8>> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let range = range(ptr, len)?;
    memory
        .data(&*caller)
        .get(range)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Reads a UTF-8 string (lossily: names and keys are ASCII in practice).
pub(crate) fn read_str(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> MemResult<String> {
    read(caller, ptr, len).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes raw bytes at `ptr`.
pub(crate) fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> MemResult<()> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let len = i32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let range = range(ptr, len)?;
    memory
        .data_mut(&mut *caller)
        .get_mut(range)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32 (wasm32 `size_t`, ids, levels).
pub(crate) fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> MemResult<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian u64 (time, metric values).
pub(crate) fn write_u64(caller: &mut Caller<'_, HostState>, ptr: i32, value: u64) -> MemResult<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: allocates with the guest's allocator, copies,
/// and stores pointer and size at `ptr_ptr`/`size_ptr`. Empty values are
/// returned as a null pointer and size 0 without allocating, as Envoy does.
///
/// The outer `Result` is a trap (the allocator itself failed); the inner one
/// is the status for the guest.
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<Status> {
    let size = match u32::try_from(bytes.len()) {
        Ok(size) => size,
        Err(_) => return Ok(Status::InvalidMemoryAccess),
    };
    let mut pointer = 0u32;
    if size > 0 {
        let Some(allocate) = caller.data().allocate.clone() else {
            wasmtime::bail!("the module exports neither proxy_on_memory_allocate nor malloc");
        };
        pointer = allocate.call(&mut *caller, size as i32)? as u32;
        if pointer == 0 {
            wasmtime::bail!("the module's allocator returned null for {size} bytes");
        }
        if let Err(status) = write(caller, pointer as i32, bytes) {
            return Ok(status);
        }
    }
    let written = write_u32(caller, ptr_ptr, pointer).and_then(|()| write_u32(caller, size_ptr, size));
    Ok(written.err().unwrap_or(Status::Ok))
}
