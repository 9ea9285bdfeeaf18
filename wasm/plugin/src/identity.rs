//! Who this sidecar serves: `WORKLOAD_NAME`, `NAMESPACE` and `LABELS` from Envoy's node metadata,
//! as Istio sets them; and which pod it is (`NAME`, else the node id), for its reports.
//!
//! Upstream Envoy serves node metadata at `xds.node.metadata.KEY`; Istio's proxy also at
//! `node.metadata.KEY`. Both are tried, upstream's first. A map value such as `LABELS` comes as
//! proxy-wasm pairs on current Envoy and as a serialized `google.protobuf.Struct` on older ones;
//! both are decoded. Anything unreadable leaves that part empty (and is reported), so the plugin
//! still works for policies whose selector does not need it.

use std::collections::BTreeMap;

use boifi_policy::Workload;

/// Property paths of one node metadata key, in the order they are tried.
pub fn property_paths(key: &str) -> [Vec<&str>; 2] {
    [
        vec!["xds", "node", "metadata", key],
        vec!["node", "metadata", key],
    ]
}

/// Bounds on what we keep from metadata; Kubernetes' own limits are smaller.
const MAX_VALUE_BYTES: usize = 1024;
const MAX_LABELS: usize = 128;
const MAX_MAP_BYTES: usize = 64 * 1024;

/// Property paths of the Envoy node id, in the order they are tried.
pub const NODE_ID_PATHS: [&[&str]; 2] = [&["xds", "node", "id"], &["node", "id"]];

/// The workload identity and what could not be read (for a warning in the log).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub workload: Workload,
    /// The pod: node metadata `NAME` as pilot-agent sets it, else the node id (Istio's
    /// `sidecar~<ip>~<pod>.<namespace>~...`); empty when neither can be read.
    pub pod: String,
    /// False when `LABELS` was present but unreadable (absent means the workload has none).
    pub labels_known: bool,
    pub problems: Vec<String>,
}

/// Reads the identity through `get`, which returns a property's bytes (or `None` when absent).
pub fn resolve(mut get: impl FnMut(&[&str]) -> Option<Vec<u8>>) -> Resolved {
    let mut problems = Vec::new();
    let mut lookup =
        |key: &str| -> Option<Vec<u8>> { property_paths(key).iter().find_map(|path| get(path)) };
    let mut string = |key: &'static str, problems: &mut Vec<String>| match lookup(key) {
        None => {
            problems.push(format!("{key}: not in node metadata"));
            String::new()
        }
        Some(bytes) => match decode_string(&bytes) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                String::new()
            }
        },
    };
    let name = string("WORKLOAD_NAME", &mut problems);
    let namespace = string("NAMESPACE", &mut problems);
    let (labels, labels_known) = match lookup("LABELS") {
        // A workload without labels is normal.
        None => (BTreeMap::new(), true),
        Some(bytes) => match decode_labels(&bytes) {
            Ok(labels) => (labels, true),
            Err(e) => {
                problems.push(format!("LABELS: {e}"));
                (BTreeMap::new(), false)
            }
        },
    };
    let name_found = lookup("NAME").map(|bytes| decode_string(&bytes));
    let pod = match name_found {
        Some(Ok(pod)) if !pod.is_empty() => pod,
        found => {
            let node_id = NODE_ID_PATHS
                .iter()
                .find_map(|path| get(path))
                .and_then(|bytes| decode_string(&bytes).ok())
                .unwrap_or_default();
            let why = match found {
                Some(Err(e)) => e,
                _ => "not in node metadata",
            };
            problems.push(if node_id.is_empty() {
                format!("NAME: {why}, and no node id")
            } else {
                format!("NAME: {why}; the node id names this sidecar")
            });
            node_id
        }
    };
    Resolved {
        workload: Workload {
            namespace,
            name,
            labels,
        },
        pod,
        labels_known,
        problems,
    }
}

fn decode_string(bytes: &[u8]) -> Result<String, &'static str> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err("value too long");
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| "not UTF-8")
}

/// Decodes a string map in either encoding Envoy uses for map-valued properties.
pub fn decode_labels(bytes: &[u8]) -> Result<BTreeMap<String, String>, &'static str> {
    if bytes.len() > MAX_MAP_BYTES {
        return Err("map too large");
    }
    if bytes.is_empty() {
        return Ok(BTreeMap::new());
    }
    decode_pairs(bytes)
        .or_else(|_| decode_struct(bytes))
        .map_err(|_| "neither proxy-wasm pairs nor a protobuf Struct of strings")
}

/// proxy-wasm pairs: u32 count, then per pair u32 key and value sizes, then each key and value
/// followed by a NUL; all little-endian. Envoy may pad the buffer, so trailing bytes are ignored.
fn decode_pairs(bytes: &[u8]) -> Result<BTreeMap<String, String>, ()> {
    let word = |at: usize| -> Result<usize, ()> {
        let b = bytes.get(at..at + 4).ok_or(())?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    if count > MAX_LABELS {
        return Err(());
    }
    let mut data = 4 + count * 8;
    let mut map = BTreeMap::new();
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = take_nul_terminated(bytes, data, key_len)?;
        data += key_len + 1;
        let value = take_nul_terminated(bytes, data, value_len)?;
        data += value_len + 1;
        map.insert(key, value);
    }
    Ok(map)
}

fn take_nul_terminated(bytes: &[u8], at: usize, len: usize) -> Result<String, ()> {
    if len > MAX_VALUE_BYTES {
        return Err(());
    }
    let end = at.checked_add(len).ok_or(())?;
    if bytes.get(end) != Some(&0) {
        return Err(());
    }
    let s = bytes.get(at..end).ok_or(())?;
    std::str::from_utf8(s).map(str::to_owned).map_err(|_| ())
}

/// A serialized `google.protobuf.Struct` whose values are strings: field 1 (`fields`) repeats
/// map entries of key (1, string) and value (2, `Value` whose field 3 is `string_value`).
fn decode_struct(bytes: &[u8]) -> Result<BTreeMap<String, String>, ()> {
    let mut map = BTreeMap::new();
    for (field, entry) in length_delimited_fields(bytes)? {
        if field != 1 {
            continue;
        }
        let (mut key, mut value) = (None, None);
        for (f, v) in length_delimited_fields(entry)? {
            match f {
                1 => key = Some(utf8(v)?),
                2 => {
                    for (vf, vv) in length_delimited_fields(v)? {
                        if vf == 3 {
                            value = Some(utf8(vv)?);
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Some(k), Some(v)) = (key, value) {
            if map.len() >= MAX_LABELS {
                return Err(());
            }
            map.insert(k, v);
        }
    }
    Ok(map)
}

fn utf8(bytes: &[u8]) -> Result<String, ()> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(());
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| ())
}

/// The (field number, payload) of each length-delimited field of a protobuf message. Varint and
/// fixed-width fields are skipped; anything malformed is an error.
fn length_delimited_fields(mut bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, ()> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let tag = varint(&mut bytes)?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        match wire_type {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..).ok_or(())?,
            5 => bytes = bytes.get(4..).ok_or(())?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).map_err(|_| ())?;
                let payload = bytes.get(..len).ok_or(())?;
                out.push((field, payload));
                bytes = &bytes[len..];
            }
            _ => return Err(()),
        }
    }
    Ok(out)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, ()> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(())?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(())
}

#[cfg(test)]
mod tests;
