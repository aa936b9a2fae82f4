//! `start`: lets a created container's init exec the user's program.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use super::Container;
use crate::error::{Error, Result};
use crate::hooks::Stage;
use crate::state::{EXEC_FIFO, Status};

impl Container {
    /// Starts a created container.
    pub fn start(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(Error::WrongStatus {
                id: self.id().into(),
                status: status.to_string(),
                what: "only a created container can be started".into(),
            });
        }
        let spec = self.spec()?;
        let fifo_path = self.dir.join(EXEC_FIFO);
        // Non-blocking: the init holds the FIFO open, so this succeeds at once; ENXIO means the
        // init is gone.
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_path)
            .map_err(|e| Error::Io { what: format!("open {} (is the container's init alive?)", fifo_path.display()), source: e })?;
        fifo.write_all(&[0]).map_err(|e| Error::Io { what: "signal the container's init".into(), source: e })?;
        std::fs::remove_file(&fifo_path).map_err(|e| Error::Io { what: format!("remove {}", fifo_path.display()), source: e })?;
        // Like runc: a failing poststart hook fails `start` and stops the container.
        if let Err(err) = crate::hooks::run(Stage::Poststart, spec.hooks().as_ref(), &self.hook_state(Status::Running)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGKILL);
            return Err(err.into());
        }
        Ok(())
    }
}
