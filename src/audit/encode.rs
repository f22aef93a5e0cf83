//! Wire formats of a batch.
//!
//! Records are encoded once, when queued ([`encode_record`]); a batch is the
//! items joined inside the format's envelope ([`encode_batch`]), so retries cost
//! no re-encoding.
//!
//! - `ndjson`: each record's canonical JSON object on its own line, every line
//!   ending in `\n` (`application/x-ndjson`).
//! - `otlp_json`: an OTLP/HTTP JSON `ExportLogsServiceRequest`
//!   (opentelemetry-proto `collector/logs/v1`, JSON mapping: lowerCamelCase field
//!   names, 64-bit integers as decimal strings, enums as numbers). One
//!   `resourceLogs` with `service.name=chatguard` and `service.version`, one
//!   `scopeLogs` with scope `chatguard.audit`, one `logRecord` per record:
//!   `timeUnixNano` and `observedTimeUnixNano` = the record time, `severityNumber`
//!   / `severityText` from the kind and outcome, `body.stringValue` = the kind, and
//!   every other record field as an attribute under the same key as in NDJSON
//!   (sorted by key; strings as `stringValue`, integers as `intValue` strings,
//!   booleans as `boolValue`, lists as `arrayValue`, objects as `kvlistValue`).

use super::record::AuditRecord;
use crate::config::audit::AuditFormat;
use serde::Serialize;

/// OTLP instrumentation scope name of audit records.
pub const OTLP_SCOPE: &str = "chatguard.audit";
/// `service.name` resource attribute.
pub const SERVICE_NAME: &str = "chatguard";

/// The `content-type` of a batch in `format`.
pub fn content_type(format: AuditFormat) -> &'static str {
    match format {
        AuditFormat::Ndjson => "application/x-ndjson",
        AuditFormat::OtlpJson => "application/json",
    }
}

/// Encodes one record as an item of `format`. `canonical` is the record's
/// [`AuditRecord::to_json_bytes`] when the caller already has it (chain mode).
pub fn encode_record(
    format: AuditFormat,
    record: &AuditRecord,
    canonical: Option<Vec<u8>>,
) -> Vec<u8> {
    match format {
        AuditFormat::Ndjson => canonical.unwrap_or_else(|| record.to_json_bytes()),
        AuditFormat::OtlpJson => otlp_log_record(record),
    }
}

/// Wraps encoded items into one request body of `format`.
pub fn encode_batch(format: AuditFormat, items: &[Vec<u8>]) -> Vec<u8> {
    let items_len: usize = items.iter().map(|i| i.len() + 1).sum();
    match format {
        AuditFormat::Ndjson => {
            let mut out = Vec::with_capacity(items_len);
            for item in items {
                out.extend_from_slice(item);
                out.push(b'\n');
            }
            out
        }
        AuditFormat::OtlpJson => {
            let head = otlp_envelope_head();
            let mut out = Vec::with_capacity(head.len() + items_len + OTLP_ENVELOPE_TAIL.len());
            out.extend_from_slice(head.as_bytes());
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(item);
            }
            out.extend_from_slice(OTLP_ENVELOPE_TAIL.as_bytes());
            out
        }
    }
}

const OTLP_ENVELOPE_TAIL: &str = "]}]}]}";

fn otlp_envelope_head() -> String {
    let resource = vec![
        KeyValue { key: "service.name".into(), value: AnyValue::String(SERVICE_NAME.into()) },
        KeyValue { key: "service.version".into(), value: AnyValue::String(crate::VERSION.into()) },
    ];
    let attributes = serde_json::to_string(&resource).unwrap_or_else(|_| "[]".into());
    format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":{attributes}}},"scopeLogs":[{{"scope":{{"name":"{OTLP_SCOPE}","version":"{}"}},"logRecords":["#,
        crate::VERSION
    )
}

/// OTLP `AnyValue` (JSON mapping: the set field's name is the key).
#[derive(Debug, Clone, PartialEq, Serialize)]
enum AnyValue {
    #[serde(rename = "stringValue")]
    String(String),
    /// int64 in the JSON mapping is a decimal string.
    #[serde(rename = "intValue")]
    Int(String),
    #[serde(rename = "boolValue")]
    Bool(bool),
    #[serde(rename = "doubleValue")]
    Double(f64),
    #[serde(rename = "arrayValue")]
    Array(ArrayValue),
    #[serde(rename = "kvlistValue")]
    KvList(KeyValueList),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct ArrayValue {
    values: Vec<AnyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct KeyValueList {
    values: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct KeyValue {
    key: String,
    value: AnyValue,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogRecord {
    time_unix_nano: String,
    observed_time_unix_nano: String,
    severity_number: u8,
    severity_text: &'static str,
    body: AnyValue,
    attributes: Vec<KeyValue>,
}

/// Fields carried elsewhere in the OTLP log record, not as attributes.
const NOT_ATTRIBUTES: [&str; 2] = ["time", "kind"];

fn otlp_log_record(record: &AuditRecord) -> Vec<u8> {
    let nanos = u128::from(record.time_ms()) * 1_000_000;
    let attributes = match serde_json::to_value(record) {
        Ok(serde_json::Value::Object(map)) => {
            kv_list(map.into_iter().filter(|(k, _)| !NOT_ATTRIBUTES.contains(&k.as_str())))
        }
        _ => Vec::new(),
    };
    let severity = record.body().severity();
    let log = LogRecord {
        time_unix_nano: nanos.to_string(),
        observed_time_unix_nano: nanos.to_string(),
        severity_number: severity.number(),
        severity_text: severity.text(),
        body: AnyValue::String(record.kind().as_str().into()),
        attributes,
    };
    serde_json::to_vec(&log).unwrap_or_else(|_| b"{}".to_vec())
}

/// Object entries as OTLP key-values, sorted by key so the output does not depend
/// on serde_json's map ordering feature.
fn kv_list(entries: impl Iterator<Item = (String, serde_json::Value)>) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> =
        entries.filter_map(|(key, v)| any_value(v).map(|value| KeyValue { key, value })).collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn any_value(value: serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value;
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => AnyValue::Bool(b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => AnyValue::Int(u.to_string()),
            (None, Some(i), _) => AnyValue::Int(i.to_string()),
            (None, None, Some(f)) => AnyValue::Double(f),
            _ => return None,
        },
        Value::String(s) => AnyValue::String(s),
        Value::Array(items) => AnyValue::Array(ArrayValue {
            values: items.into_iter().filter_map(any_value).collect(),
        }),
        Value::Object(map) => AnyValue::KvList(KeyValueList { values: kv_list(map.into_iter()) }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::fields::{Name, Pseudonymizer};
    use crate::audit::record::{
        Access, DataAccess, Decision, RecordBody, RequestContext, RequestFacts,
    };
    use crate::config::audit::{IpTruncation, RetentionDays, SubjectMode};
    use std::collections::BTreeMap;

    fn fixed_access_record() -> AuditRecord {
        let roles = vec!["analyst".to_string(), "user".to_string()];
        let context = RequestContext::from_facts(
            &RequestFacts {
                request_id: Some("3f2c1a7e-5b1d-4c7a-9a77-1b2c3d4e5f60"),
                method: "POST",
                path: "/v1/chat/completions?key=secret",
                subject: Some("user-42"),
                roles: &roles,
                client_ip: Some("203.0.113.77:4242"),
            },
            &Pseudonymizer::new(SubjectMode::Raw, b""),
            &IpTruncation::default(),
        );
        AuditRecord::new(
            "00000000000000ab-7".into(),
            1_714_566_896_789,
            &RetentionDays::default(),
            Some(context),
            RecordBody::Access(Access {
                rule: Some(Name::new("chat")),
                status: 200,
                decision: Decision::Allow,
                reason: None,
                latency_ms: 12,
            }),
        )
    }

    #[test]
    fn ndjson_golden() {
        let record = fixed_access_record();
        let item = encode_record(AuditFormat::Ndjson, &record, None);
        let batch = encode_batch(AuditFormat::Ndjson, &[item.clone(), item]);
        let line = r#"{"record_id":"00000000000000ab-7","time":"2024-05-01T12:34:56.789Z","kind":"access","retention_days":90,"request_id":"3f2c1a7e-5b1d-4c7a-9a77-1b2c3d4e5f60","method":"POST","path":"/v1/chat/completions","subject":"user-42","roles":["analyst","user"],"client_ip":"203.0.113.0/24","rule":"chat","status":200,"decision":"allow","latency_ms":12}"#;
        assert_eq!(String::from_utf8(batch).unwrap(), format!("{line}\n{line}\n"));
        assert_eq!(content_type(AuditFormat::Ndjson), "application/x-ndjson");
    }

    #[test]
    fn otlp_json_golden() {
        let record = fixed_access_record();
        let item = encode_record(AuditFormat::OtlpJson, &record, None);
        let batch = encode_batch(AuditFormat::OtlpJson, &[item]);
        let want = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"chatguard"}},{"key":"service.version","value":{"stringValue":"@V"}}]},"scopeLogs":[{"scope":{"name":"chatguard.audit","version":"@V"},"logRecords":[{"timeUnixNano":"1714566896789000000","observedTimeUnixNano":"1714566896789000000","severityNumber":9,"severityText":"INFO","body":{"stringValue":"access"},"attributes":[{"key":"client_ip","value":{"stringValue":"203.0.113.0/24"}},{"key":"decision","value":{"stringValue":"allow"}},{"key":"latency_ms","value":{"intValue":"12"}},{"key":"method","value":{"stringValue":"POST"}},{"key":"path","value":{"stringValue":"/v1/chat/completions"}},{"key":"record_id","value":{"stringValue":"00000000000000ab-7"}},{"key":"request_id","value":{"stringValue":"3f2c1a7e-5b1d-4c7a-9a77-1b2c3d4e5f60"}},{"key":"retention_days","value":{"intValue":"90"}},{"key":"roles","value":{"arrayValue":{"values":[{"stringValue":"analyst"},{"stringValue":"user"}]}}},{"key":"rule","value":{"stringValue":"chat"}},{"key":"status","value":{"intValue":"200"}},{"key":"subject","value":{"stringValue":"user-42"}}]}]}]}]}"#
            .replace("@V", crate::VERSION);
        assert_eq!(String::from_utf8(batch).unwrap(), want);
        assert_eq!(content_type(AuditFormat::OtlpJson), "application/json");
    }

    #[test]
    fn otlp_maps_objects_and_booleans() {
        let mut request_entities = BTreeMap::new();
        request_entities.insert(Name::new("email"), 2);
        request_entities.insert(Name::new("card"), 1);
        let record = AuditRecord::new(
            "r".into(),
            1,
            &RetentionDays::default(),
            None,
            RecordBody::DataAccess(DataAccess {
                request_entities,
                response_entities: BTreeMap::new(),
                redacted: true,
            }),
        );
        let item = String::from_utf8(encode_record(AuditFormat::OtlpJson, &record, None)).unwrap();
        assert_eq!(
            item,
            r#"{"timeUnixNano":"1000000","observedTimeUnixNano":"1000000","severityNumber":9,"severityText":"INFO","body":{"stringValue":"data_access"},"attributes":[{"key":"record_id","value":{"stringValue":"r"}},{"key":"redacted","value":{"boolValue":true}},{"key":"request_entities","value":{"kvlistValue":{"values":[{"key":"card","value":{"intValue":"1"}},{"key":"email","value":{"intValue":"2"}}]}}},{"key":"retention_days","value":{"intValue":"2555"}}]}"#
        );
    }

    #[test]
    fn empty_batches_are_well_formed() {
        assert!(encode_batch(AuditFormat::Ndjson, &[]).is_empty());
        let otlp = encode_batch(AuditFormat::OtlpJson, &[]);
        let v: serde_json::Value = serde_json::from_slice(&otlp).unwrap();
        assert_eq!(v["resourceLogs"][0]["scopeLogs"][0]["logRecords"], serde_json::json!([]));
    }

    #[test]
    fn otlp_batch_of_many_is_valid_json_with_every_record() {
        let record = fixed_access_record();
        let items: Vec<Vec<u8>> =
            (0..5).map(|_| encode_record(AuditFormat::OtlpJson, &record, None)).collect();
        let v: serde_json::Value =
            serde_json::from_slice(&encode_batch(AuditFormat::OtlpJson, &items)).unwrap();
        let logs = v["resourceLogs"][0]["scopeLogs"][0]["logRecords"].as_array().unwrap();
        assert_eq!(logs.len(), 5);
    }
}
