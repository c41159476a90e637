//! Tests of [`super::Store`]: round trip, permissions, bad files set aside without losing the
//! others.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::trigger::tests_support::spec;
use std::os::unix::fs::PermissionsExt;

fn temp_home(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmdop-store-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn saved(store: &Store, name: &str) -> Record {
    let mut record = Record::new(spec(name, "0 3 * * *"), 1000);
    let run = record.push_started(2000, false, 2000);
    let end = crate::trigger::scheduler::Ended::default();
    record.finish(run.id, cmdop_proto::Outcome::Ok, end, 2500);
    let mut ring = OutputRing::new(4);
    ring.push(b"hello world");
    store
        .write_output(name, run.id, &Store::encode_output(&ring))
        .unwrap();
    // The output of a run no longer in the history (a crash before its deletion).
    store
        .write_output(name, 99, &Store::encode_output(&ring))
        .unwrap();
    store.write(name, &Store::encode(&record).unwrap()).unwrap();
    record
}

#[test]
fn a_trigger_round_trips_with_its_output_in_a_private_file() {
    let home = temp_home("round");
    let store = Store::new(&home);
    let record = saved(&store, "backup");
    let path = home.join("triggers/backup.json");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (loaded, errors) = store.load_all(5000);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].record, record);
    let output = &loaded[0].outputs[&1];
    assert_eq!((output.total(), output.kept()), (11, b"orld".to_vec()));
    assert_eq!(loaded[0].outputs.len(), 1);
    assert!(
        !home.join("triggers/backup.out/99").exists(),
        "stray output deleted"
    );
    // The record file holds no output: it stays small.
    let record_file = std::fs::read_to_string(&path).unwrap();
    assert!(!record_file.contains("orld") && !record_file.contains("outputs"));
    store.delete("backup").unwrap();
    assert!(!home.join("triggers/backup.out").exists());
    assert!(store.load_all(5000).0.is_empty());
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn bad_files_are_set_aside_and_the_others_load() {
    let home = temp_home("bad");
    let store = Store::new(&home);
    saved(&store, "good");
    let dir = home.join("triggers");
    std::fs::write(dir.join("torn.json"), b"{\"format_version\": 1, \"rec").unwrap();
    std::fs::write(dir.join("future.json"), b"{\"format_version\": 99}").unwrap();
    std::fs::write(dir.join("garbage.json"), [0xff, 0x00, 0x13]).unwrap();
    // Another trigger's content under a different name.
    std::fs::copy(dir.join("good.json"), dir.join("other.json")).unwrap();
    // A temporary file of an interrupted write is not a trigger.
    std::fs::write(dir.join(".good.json.tmp.1"), b"partial").unwrap();
    let (loaded, errors) = store.load_all(7);
    let names: Vec<&str> = loaded.iter().map(|l| l.record.spec.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("format_version 99")),
        "{errors:?}"
    );
    assert!(dir.join("torn.json.bad-7").exists());
    // Set aside, so the next start is clean.
    assert!(store.load_all(8).1.is_empty());
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn a_version_1_file_with_outputs_inside_still_loads() {
    let home = temp_home("v1");
    let store = Store::new(&home);
    let mut record = Record::new(spec("old", "0 3 * * *"), 1000);
    let run = record.push_started(2000, false, 2000);
    record.finish(run.id, cmdop_proto::Outcome::Ok, Default::default(), 2500);
    let v1 = serde_json::json!({
        "format_version": 1,
        "record": record,
        "outputs": {"1": {"total": 5, "kept": "aGk="}},
    });
    store
        .write("old", &serde_json::to_vec(&v1).unwrap())
        .unwrap();
    let (loaded, errors) = store.load_all(5000);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(loaded[0].migrate);
    assert_eq!(loaded[0].outputs[&1].kept(), b"hi");
    let _ = std::fs::remove_dir_all(home);
}
