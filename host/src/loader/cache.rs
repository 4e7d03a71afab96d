//! What the last run learnt about each library, so that a restart needs no inspecting child
//! for a file it already knows: the file's fingerprint (identity, size, change times) and its
//! exports, one JSON file in the host's private copy folder.
//!
//! A cached library counts as untouched only while its fingerprint matches (any write or
//! `chmod` changes the ctime), and a library that a configured class needs is loaded from its
//! own bytes as ever: the cache only spares the child for the others, and tells which file
//! holds a class. A missing, unreadable or foreign cache is ignored (everything is inspected);
//! failing to write it costs the next start its children, nothing else.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::inspect::{exports_from_json, exports_to_json};
use super::{Exports, Fingerprint, Library, Registry};

/// The cache's file name inside the private copy folder.
pub(super) const FILE: &str = "inspected.json";
/// Its layout; a file of another version is ignored.
const VERSION: u64 = 1;

/// The libraries the cache in `dir` knows, none of them loaded.
pub(super) fn read(dir: &Path) -> Registry {
    let path = dir.join(FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Registry::default();
    };
    let libraries = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v["version"].as_u64() == Some(VERSION))
        .and_then(|v| {
            v["libraries"]
                .as_array()
                .map(|l| l.iter().map(entry).collect())
        })
        .unwrap_or_else(|| {
            tracing::debug!("ignoring the unreadable library cache {}", path.display());
            Vec::new()
        });
    Registry {
        libraries: libraries.into_iter().flatten().map(Arc::new).collect(),
        refused: Vec::new(),
    }
}

/// Writes what `registry` knows to the cache in `dir` (best effort: see the module doc).
pub(super) fn write(dir: &Path, registry: &Registry) {
    let libraries: Vec<Value> = registry
        .libraries
        .iter()
        .map(|l| {
            let exports = Exports {
                name: l.name.clone(),
                version: l.version.clone(),
                sdk_version: l.sdk_version.clone(),
                abi_version: l.abi_version.clone(),
                classes: l.classes.clone(),
            };
            let f = &l.fingerprint;
            json!({
                "file": l.file,
                "sha256": l.sha256,
                "size": l.size,
                "fingerprint": [f.device, f.inode, f.len, f.modified.map(nanos), f.changed_ns],
                "exports": exports_to_json(&exports),
            })
        })
        .collect();
    let text = json!({"version": VERSION, "libraries": libraries}).to_string();
    let temporary = dir.join(format!(".{FILE}.{}", std::process::id()));
    let written = super::create_private_dir(dir)
        .and_then(|()| std::fs::write(&temporary, text))
        .and_then(|()| std::fs::rename(&temporary, dir.join(FILE)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        tracing::debug!("cannot write the library cache in {}: {e}", dir.display());
    }
}

fn entry(value: &Value) -> Option<Library> {
    let fingerprint = value["fingerprint"].as_array()?;
    let number = |i: usize| fingerprint.get(i)?.as_u64();
    let fingerprint = Fingerprint {
        device: number(0)?,
        inode: number(1)?,
        len: number(2)?,
        modified: match &fingerprint.get(3)? {
            Value::Null => None,
            at => Some(UNIX_EPOCH + Duration::from_nanos(at.as_u64()?)),
        },
        changed_ns: fingerprint.get(4)?.as_i64()?,
    };
    Some(Library::new(
        value["file"].as_str()?.into(),
        exports_from_json(value["exports"].as_object()?)?,
        value["sha256"].as_str().map(str::to_owned),
        value["size"].as_u64()?,
        fingerprint,
        None,
    ))
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calllogger_plugin_abi::{ClassInfo, PluginKind};

    fn library(file: &str) -> Library {
        let exports = Exports {
            name: "calllogger-mock-calls".into(),
            version: "0.3.0".into(),
            sdk_version: "0.3.0".into(),
            abi_version: "0.3".into(),
            classes: vec![ClassInfo {
                name: "MockCalls".into(),
                description: "fake calls".into(),
                kind: PluginKind::Generic,
            }],
        };
        let fingerprint = Fingerprint {
            device: 1,
            inode: 2,
            len: 3,
            modified: Some(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)),
            changed_ns: 1_700_000_000_987_654_321,
        };
        Library::new(
            file.into(),
            exports,
            Some("ab".into()),
            3,
            fingerprint,
            None,
        )
    }

    #[test]
    fn what_is_written_is_read_back_unloaded_and_a_bad_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).libraries.is_empty(), "no cache yet");
        let registry = Registry {
            libraries: vec![Arc::new(library("/plugins/libmock.so"))],
            refused: Vec::new(),
        };
        write(dir.path(), &registry);
        let back = read(dir.path());
        let [cached] = &back.libraries[..] else {
            panic!("one library: {:?}", back.libraries.len());
        };
        let original = &registry.libraries[0];
        assert_eq!(cached.file, original.file);
        assert_eq!(cached.fingerprint, original.fingerprint);
        assert_eq!(cached.sha256, original.sha256);
        assert_eq!(cached.classes[0].name.as_str(), "MockCalls");
        assert!(!cached.is_loaded());
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(read(dir.path()).libraries.is_empty());
        std::fs::write(dir.path().join(FILE), r#"{"version": 99, "libraries": []}"#).unwrap();
        assert!(read(dir.path()).libraries.is_empty());
    }
}
