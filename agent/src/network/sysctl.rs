//! Writing the kernel settings the node network needs, through /proc/sys.
//!
//! /proc/sys/net shows the network namespace of the thread that opens it, so these apply to the
//! caller's namespace (the node's).

use std::fs;
use std::path::Path;

use super::error::{NetworkError, Result};

/// Sets `key` (a path below /proc/sys like `net/ipv4/ip_forward`) to `value` unless it already
/// has that value.
pub(crate) fn set(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    if fs::read_to_string(&path).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| NetworkError::io(format!("set {} to {value}", path.display()), e))
}
