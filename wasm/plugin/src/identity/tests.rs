use super::*;

/// Encodes pairs the way Envoy does, with the padding it may add.
fn pairs(entries: &[(&str, &str)], padding: usize) -> Vec<u8> {
    let mut out = (entries.len() as u32).to_le_bytes().to_vec();
    for (k, v) in entries {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in entries {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out.extend(std::iter::repeat_n(0, padding));
    out
}

fn pb_len(field: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128, "test helper encodes one-byte lengths");
    let mut out = vec![(field << 3) | 2, payload.len() as u8];
    out.extend(payload);
    out
}

/// A `google.protobuf.Struct` with string values.
fn protobuf_struct(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        let mut entry = pb_len(1, k.as_bytes());
        entry.extend(pb_len(2, &pb_len(3, v.as_bytes())));
        out.extend(pb_len(1, &entry));
    }
    out
}

fn metadata(entries: Vec<(Vec<&'static str>, Vec<u8>)>) -> impl FnMut(&[&str]) -> Option<Vec<u8>> {
    move |path| {
        entries
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, v)| v.clone())
    }
}

#[test]
fn reads_upstream_envoy_paths() {
    let resolved = resolve(metadata(vec![
        (
            vec!["xds", "node", "metadata", "WORKLOAD_NAME"],
            b"reviews-v2".to_vec(),
        ),
        (
            vec!["xds", "node", "metadata", "NAMESPACE"],
            b"demo".to_vec(),
        ),
        (
            vec!["xds", "node", "metadata", "LABELS"],
            pairs(&[("app", "reviews"), ("version", "v2")], 7),
        ),
    ]));
    assert!(resolved.problems.is_empty(), "{:?}", resolved.problems);
    assert_eq!(resolved.workload.name, "reviews-v2");
    assert_eq!(resolved.workload.namespace, "demo");
    assert_eq!(
        resolved.workload.labels,
        BTreeMap::from([
            ("app".to_owned(), "reviews".to_owned()),
            ("version".to_owned(), "v2".to_owned())
        ])
    );
}

#[test]
fn falls_back_to_istio_paths_and_protobuf_struct() {
    let resolved = resolve(metadata(vec![
        (
            vec!["node", "metadata", "WORKLOAD_NAME"],
            b"ratings".to_vec(),
        ),
        (vec!["node", "metadata", "NAMESPACE"], b"shop".to_vec()),
        (
            vec!["node", "metadata", "LABELS"],
            protobuf_struct(&[("app", "ratings"), ("tier", "backend")]),
        ),
    ]));
    assert!(resolved.problems.is_empty(), "{:?}", resolved.problems);
    assert_eq!(resolved.workload.name, "ratings");
    assert_eq!(resolved.workload.namespace, "shop");
    assert_eq!(
        resolved.workload.labels.get("tier").map(String::as_str),
        Some("backend")
    );
}

#[test]
fn missing_metadata_is_reported_not_fatal() {
    let resolved = resolve(|_| None);
    assert_eq!(resolved.workload, Workload::default());
    assert!(resolved.labels_known, "no LABELS: the workload has none");
    assert_eq!(
        resolved.problems,
        vec![
            "WORKLOAD_NAME: not in node metadata".to_owned(),
            "NAMESPACE: not in node metadata".to_owned()
        ]
    );
}

#[test]
fn bad_values_are_reported() {
    let resolved = resolve(metadata(vec![
        (
            vec!["xds", "node", "metadata", "WORKLOAD_NAME"],
            vec![0xff, 0xfe],
        ),
        (
            vec!["xds", "node", "metadata", "NAMESPACE"],
            vec![b'a'; 5000],
        ),
        (vec!["xds", "node", "metadata", "LABELS"], vec![9, 9, 9]),
    ]));
    assert_eq!(resolved.workload, Workload::default());
    assert_eq!(resolved.problems.len(), 3, "{:?}", resolved.problems);
    assert!(!resolved.labels_known);
    assert!(resolved.problems[2].starts_with("LABELS:"));
}

#[test]
fn truncated_or_lying_pairs_are_rejected() {
    let good = pairs(&[("app", "x")], 0);
    for cut in 1..good.len() {
        // Every strict prefix is either unreadable or (by chance) a valid smaller encoding;
        // it must never panic.
        let _ = decode_labels(&good[..cut]);
    }
    let mut lying = good.clone();
    lying[4] = 200; // key length beyond the buffer
    assert!(decode_pairs(&lying).is_err());
    let mut huge_count = good;
    huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_pairs(&huge_count).is_err());
    assert_eq!(decode_labels(&[]), Ok(BTreeMap::new()));
}

#[test]
fn protobuf_decoder_skips_other_wire_types_and_rejects_garbage() {
    let mut bytes = vec![0x08, 0x96, 0x01]; // field 1 varint 150: not a map entry
    bytes.extend(protobuf_struct(&[("k", "v")]));
    assert_eq!(
        decode_struct(&bytes),
        Ok(BTreeMap::from([("k".to_owned(), "v".to_owned())]))
    );
    assert!(
        decode_struct(&[0x0a, 0x05, 0x01]).is_err(),
        "length past the end"
    );
    assert!(decode_struct(&[0x0f]).is_err(), "wire type 7");
    assert!(decode_struct(&[0x80; 11]).is_err(), "varint too long");
}
