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
        (
            vec!["xds", "node", "metadata", "NAME"],
            b"reviews-v2-7d9f5c-00000".to_vec(),
        ),
        (vec!["xds", "node", "id"], b"sidecar~ignored".to_vec()),
    ]));
    assert!(resolved.problems.is_empty(), "{:?}", resolved.problems);
    assert_eq!(resolved.pod, "reviews-v2-7d9f5c-00000");
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
        (vec!["node", "metadata", "NAME"], b"ratings-1".to_vec()),
    ]));
    assert!(resolved.problems.is_empty(), "{:?}", resolved.problems);
    assert_eq!(resolved.pod, "ratings-1");
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
            "NAMESPACE: not in node metadata".to_owned(),
            "NAME: not in node metadata, and no node id".to_owned()
        ]
    );
    assert_eq!(resolved.pod, "");
}

#[test]
fn the_pod_falls_back_to_the_node_id() {
    const NODE_ID: &str = "sidecar~10.0.0.7~reviews-v2-abc.demo~demo.svc.cluster.local";
    for (name, id_path) in [
        (None, vec!["xds", "node", "id"]),
        (Some(vec![0xff]), vec!["node", "id"]),
        (Some(Vec::new()), vec!["xds", "node", "id"]),
    ] {
        let mut entries = vec![(id_path, NODE_ID.as_bytes().to_vec())];
        if let Some(name) = name.clone() {
            entries.push((vec!["xds", "node", "metadata", "NAME"], name));
        }
        let resolved = resolve(metadata(entries));
        assert_eq!(resolved.pod, NODE_ID, "NAME {name:?}");
        assert!(
            resolved
                .problems
                .iter()
                .any(|p| p.starts_with("NAME:") && p.ends_with("the node id names this sidecar")),
            "{:?}",
            resolved.problems
        );
    }
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
        (vec!["xds", "node", "metadata", "NAME"], b"pod-1".to_vec()),
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

/// Decodes possibly broken labels: no panic, and what comes out respects the bounds.
fn assert_bounded(bytes: &[u8]) -> Result<BTreeMap<String, String>, &'static str> {
    let result = decode_labels(bytes);
    match &result {
        Ok(map) => {
            assert!(map.len() <= MAX_LABELS);
            assert!(map
                .iter()
                .all(|(k, v)| k.len() <= MAX_VALUE_BYTES && v.len() <= MAX_VALUE_BYTES));
        }
        Err(e) => assert!(!e.is_empty()),
    }
    result
}

const LABELS: [(&str, &str); 3] = [("app", "reviews"), ("version", "v2"), ("team", "é")];

#[test]
fn truncated_label_encodings_never_panic() {
    for encoded in [pairs(&LABELS, 0), protobuf_struct(&LABELS)] {
        for len in 0..encoded.len() {
            // A prefix may by chance be a smaller valid encoding; it never yields more labels.
            if let Ok(map) = assert_bounded(&encoded[..len]) {
                assert!(map.len() < LABELS.len(), "{len}: {map:?}");
            }
        }
        assert_eq!(assert_bounded(&encoded).unwrap().len(), LABELS.len());
    }
}

#[test]
fn mutated_label_encodings_never_panic() {
    for (seed, encoded) in [(1, pairs(&LABELS, 3)), (2, protobuf_struct(&LABELS))] {
        let mut rejected = 0;
        for mutant in crate::test_support::mutants(&encoded, seed, 3_000) {
            rejected += usize::from(assert_bounded(&mutant).is_err());
        }
        assert!(rejected > 1_000, "seed {seed}: only {rejected} rejected");
    }
}

#[test]
fn label_sizes_at_and_over_the_limits() {
    let long = "v".repeat(MAX_VALUE_BYTES);
    let longer = "v".repeat(MAX_VALUE_BYTES + 1);
    assert_eq!(
        assert_bounded(&pairs(&[("k", &long)], 0)).unwrap()["k"],
        long
    );
    assert!(assert_bounded(&pairs(&[("k", &longer)], 0)).is_err());
    assert!(assert_bounded(&pairs(&[(&longer, "v")], 0)).is_err());

    let names: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|k| (k.as_str(), "v")).collect();
    let most = &entries[..MAX_LABELS];
    for encoded in [pairs(most, 0), protobuf_struct(most)] {
        assert_eq!(assert_bounded(&encoded).unwrap().len(), MAX_LABELS);
    }
    for encoded in [pairs(&entries, 0), protobuf_struct(&entries)] {
        assert!(assert_bounded(&encoded).is_err());
    }

    // The whole map: padding counts, so exactly the limit is read and one byte more is not.
    let at_limit = pairs(&LABELS, MAX_MAP_BYTES - pairs(&LABELS, 0).len());
    assert_eq!(at_limit.len(), MAX_MAP_BYTES);
    assert_eq!(assert_bounded(&at_limit).unwrap().len(), LABELS.len());
    let mut over = at_limit;
    over.push(0);
    assert_eq!(assert_bounded(&over), Err("map too large"));

    // Protobuf lengths that claim far more than is there, up to a u64 varint.
    for claim in [
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        &[
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
    ] {
        assert!(assert_bounded(claim).is_err());
    }
}

#[test]
fn garbage_metadata_is_reported_per_key() {
    let long = vec![b'n'; MAX_VALUE_BYTES + 1];
    for (name, labels) in [
        (long.clone(), vec![0xff; 9]),
        (vec![0xc3], pairs(&LABELS, 0)[..7].to_vec()),
        (b"ok".to_vec(), vec![0; MAX_MAP_BYTES + 1]),
    ] {
        let resolved = resolve(metadata(vec![
            (vec!["xds", "node", "metadata", "WORKLOAD_NAME"], name),
            (vec!["node", "metadata", "LABELS"], labels),
        ]));
        assert!(!resolved.labels_known);
        assert!(resolved.workload.labels.is_empty());
        let keys: Vec<&str> = resolved
            .problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert!(
            keys.contains(&"NAMESPACE") && keys.contains(&"LABELS"),
            "{keys:?}"
        );
    }
}
