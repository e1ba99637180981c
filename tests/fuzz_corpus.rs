//! Replays every fuzz corpus file and every crash artifact (`fuzz/corpus/<target>/`,
//! `fuzz/artifacts/<target>/`) through the same harness functions the
//! cargo-fuzz targets use (`fuzz/harness.rs`), under plain stable `cargo test`.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str) {
    let f = harness::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if !path.is_file()
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| f(&data)).is_err() {
                panic!("{target}: {} fails", path.display());
            }
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn bencode_corpus() {
    replay("bencode");
}

#[test]
fn metainfo_corpus() {
    replay("metainfo");
}

#[test]
fn wire_corpus() {
    replay("wire");
}

#[test]
fn tracker_response_corpus() {
    replay("tracker_response");
}

#[test]
fn tracker_server_corpus() {
    replay("tracker_server");
}

#[test]
fn paths_corpus() {
    replay("paths");
}

#[test]
fn geometry_corpus() {
    replay("geometry");
}

#[test]
fn peer_session_corpus() {
    replay("peer_session");
    harness::peer_session_cleanup();
}

#[test]
fn udp_tracker_response_corpus() {
    replay("udp_tracker_response");
}

#[test]
fn udp_tracker_request_corpus() {
    replay("udp_tracker_request");
}

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = harness::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "bencode",
            "metainfo",
            "wire",
            "tracker_response",
            "tracker_server",
            "paths",
            "geometry",
            "peer_session",
            "extension",
            "udp_tracker_response",
            "udp_tracker_request",
            "mse",
            "magnet",
            "krpc",
            "ut_pex",
            "ut_metadata"
        ]
    );
}

#[test]
fn extension_corpus() {
    replay("extension");
}

#[test]
fn mse_corpus() {
    replay("mse");
}

#[test]
fn magnet_corpus() {
    replay("magnet");
}

#[test]
fn krpc_corpus() {
    replay("krpc");
}

#[test]
fn ut_pex_corpus() {
    replay("ut_pex");
}

#[test]
fn ut_metadata_corpus() {
    replay("ut_metadata");
}
