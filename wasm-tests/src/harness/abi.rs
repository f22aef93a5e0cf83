//! Proxy-wasm ABI 0.2.1 vocabulary: the numeric enums and the wire formats
//! (serialized header maps, property paths) shared by host and guest.
//!
//! Values follow the spec (proxy-wasm/spec, abi-versions/v0.2.1), which the
//! Rust SDK 0.2.5 mirrors in `proxy_wasm::types`.

/// `proxy_status_t`: what every host function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// No such key, buffer, queue or metric.
    NotFound = 1,
    /// An argument is out of range or names an unknown enum value.
    BadArgument = 2,
    /// A property could not be serialized.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// A pointer/length pair points outside guest memory.
    InvalidMemoryAccess = 6,
    /// The queue has nothing to dequeue.
    Empty = 7,
    /// Shared data changed since the caller read its `cas`.
    CasMismatch = 8,
    /// The host failed for a reason of its own.
    InternalFailure = 10,
    /// The host does not implement this function.
    Unimplemented = 12,
}

impl Status {
    /// The raw value handed back to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// `proxy_action_t` as returned by the stream hooks, plus what the harness
/// reports when Envoy would not have called the hook at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The filter let the headers/body/trailers through.
    Continue,
    /// The filter stopped iteration (Envoy: StopIteration / StopIterationAndBuffer).
    Pause,
    /// The hook was not delivered: the stream (or this direction of it) had
    /// already ended, e.g. after a local response. Envoy does the same.
    NotDelivered,
}

impl Action {
    /// Decodes the guest's return value; `None` for values the ABI does not define.
    pub fn from_raw(raw: i32) -> Option<Self> {
        match raw {
            0 => Some(Action::Continue),
            1 => Some(Action::Pause),
            _ => None,
        }
    }
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    /// Decodes a guest-supplied level; `None` for unknown values.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The raw value written back to the guest.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    /// 0
    HttpRequestBody,
    /// 1
    HttpResponseBody,
    /// 2
    DownstreamData,
    /// 3
    UpstreamData,
    /// 4
    HttpCallResponseBody,
    /// 5
    GrpcReceiveBuffer,
    /// 6
    VmConfiguration,
    /// 7
    PluginConfiguration,
    /// 8
    CallData,
}

impl BufferType {
    /// Decodes a guest-supplied buffer id; `None` for unknown values.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// 0
    HttpRequestHeaders,
    /// 1
    HttpRequestTrailers,
    /// 2
    HttpResponseHeaders,
    /// 3
    HttpResponseTrailers,
    /// 4
    GrpcReceiveInitialMetadata,
    /// 5
    GrpcReceiveTrailingMetadata,
    /// 6
    HttpCallResponseHeaders,
    /// 7
    HttpCallResponseTrailers,
}

impl MapType {
    /// Decodes a guest-supplied map id; `None` for unknown values.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => MapType::HttpRequestHeaders,
            1 => MapType::HttpRequestTrailers,
            2 => MapType::HttpResponseHeaders,
            3 => MapType::HttpResponseTrailers,
            4 => MapType::GrpcReceiveInitialMetadata,
            5 => MapType::GrpcReceiveTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    /// 0: the request half of an HTTP stream.
    HttpRequest,
    /// 1: the response half of an HTTP stream.
    HttpResponse,
    /// 2: TCP downstream.
    Downstream,
    /// 3: TCP upstream.
    Upstream,
}

impl StreamType {
    /// Decodes a guest-supplied stream type; `None` for unknown values.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// 0: monotonically increasing.
    Counter,
    /// 1: goes up and down.
    Gauge,
    /// 2: records samples.
    Histogram,
}

impl MetricType {
    /// Decodes a guest-supplied metric type; `None` for unknown values.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// Header pairs in order; values are bytes because HTTP allows non-UTF-8.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// Serializes a map the way the spec and the SDK read it: a count, then
/// (key length, value length) pairs, then each key and value NUL-terminated.
pub fn serialize_map(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&len_u32(key.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Parses a serialized map; `None` if it is truncated or malformed. An empty
/// input (or a lone NUL) is the empty map, as the spec allows.
pub fn deserialize_map(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)? as usize;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let sizes = 4 + index * 8;
        let key_len = read_u32(bytes, sizes)? as usize;
        let value_len = read_u32(bytes, sizes + 4)? as usize;
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data = data.checked_add(key_len + 1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len + 1)?;
        pairs.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(pairs)
}

/// Splits a property path as the SDK serializes it: segments joined by NUL.
pub fn split_property_path(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|segment| String::from_utf8_lossy(segment).into_owned())
        .collect()
}

/// Converts owned or borrowed string pairs into [`Pairs`].
pub fn pairs<K: AsRef<str>, V: AsRef<[u8]>>(items: &[(K, V)]) -> Pairs {
    items
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_vec()))
        .collect()
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_matches_the_spec_example() {
        let map = pairs(&[("a", "1"), ("b", "22")]);
        let bytes = serialize_map(&map);
        let mut expected = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        expected.extend_from_slice(b"a\x001\x00b\x0022\x00");
        assert_eq!(bytes, expected);
        assert_eq!(deserialize_map(&bytes), Some(map));
    }

    #[test]
    fn empty_and_truncated_maps() {
        assert_eq!(deserialize_map(b""), Some(vec![]));
        assert_eq!(deserialize_map(b"\x00"), Some(vec![]));
        assert_eq!(deserialize_map(&[1, 0, 0, 0, 5, 0, 0, 0]), None);
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(split_property_path(b"source\x00address"), vec!["source", "address"]);
        assert_eq!(split_property_path(b"plugin_name"), vec!["plugin_name"]);
        assert!(split_property_path(b"").is_empty());
    }
}
