//! The program the container runs: found through the container's `PATH` before we report
//! "ready" (so `create` fails on a missing binary, as runc's does), then exec'd after `start`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};
use oci_spec::runtime::Process;

use crate::error::{Error, Result};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A resolved program with its arguments and environment.
pub struct ExecTarget {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

impl ExecTarget {
    /// Resolves `process.args[0]` in the container (we have pivoted already).
    pub fn resolve(process: &Process) -> Result<ExecTarget> {
        let args = process.args().as_deref().unwrap_or(&[]);
        let env = process.env().as_deref().unwrap_or(&[]);
        let program = &args[0];
        let path = if program.contains('/') {
            PathBuf::from(program)
        } else {
            let search = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
            search
                .split(':')
                .map(|dir| Path::new(dir).join(program))
                .find(|p| is_executable(p))
                .ok_or_else(|| Error::Init(format!("executable file {program:?} not found in $PATH ({search})")))?
        };
        if !is_executable(&path) {
            return Err(Error::Init(format!("{} does not exist in the container or is not executable", path.display())));
        }
        Ok(ExecTarget {
            path: cstring(path.as_os_str().as_encoded_bytes())?,
            args: args.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_>>()?,
            env: env.iter().map(|e| cstring(e.as_bytes())).collect::<Result<_>>()?,
        })
    }

    /// Replaces this process with the program. Returns only on failure.
    pub fn exec(self) -> Error {
        let err = nix::unistd::execve(&self.path, &self.args, &self.env).unwrap_err();
        Error::Sys { what: format!("exec {:?}", self.path), source: err }
    }
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && access(path, AccessFlags::X_OK).is_ok()
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::ConfigInvalid(format!("{:?} contains a NUL byte", String::from_utf8_lossy(bytes))))
}
