//! Small JSON state files under the agent's data dir, replaced atomically.
//!
//! A write goes to a temp file in the same directory, is fsynced, renamed over the old file and
//! the directory is fsynced: after a crash the file holds either the old or the new state, never
//! a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{NetworkError, Result};

/// The parsed file, or `None` if it does not exist yet.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetworkError::io(format!("read {}", path.display()), e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| NetworkError::StateFile {
        path: path.to_owned(),
        problem: format!(
            "cannot be parsed ({e}): fix or remove it (tasks' addresses or ports it held \
                 are then forgotten)"
        ),
    })
}

/// Replaces the file with `value` as pretty JSON, atomically; creates the directory if needed.
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let action = |what: &str| format!("{what} {}", path.display());
    let dir = path.parent().ok_or_else(|| NetworkError::InvalidConfig(action("state file has no directory:")))?;
    fs::create_dir_all(dir).map_err(|e| NetworkError::io(action("create the directory of"), e))?;
    let mut text = serde_json::to_vec_pretty(value).expect("state types serialize to JSON");
    text.push(b'\n');
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| -> io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        NetworkError::io(action("write"), e)
    })
}

/// Removes the file; a missing file is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetworkError::io(format!("remove {}", path.display()), e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn written_state_reads_back_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(read::<BTreeMap<String, u16>>(&path).unwrap(), None);
        let state = BTreeMap::from([("a".to_string(), 1u16)]);
        write(&path, &state).unwrap();
        write(&path, &state).unwrap();
        assert_eq!(read(&path).unwrap(), Some(state));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
        remove(&path).unwrap();
        remove(&path).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{not json").unwrap();
        let error = read::<BTreeMap<String, u16>>(&path).unwrap_err().to_string();
        assert!(error.contains("state.json"), "{error}");
    }
}
