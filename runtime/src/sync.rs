//! The channel between the runtime (parent) and the container's init (child) during setup.
//!
//! The parent says "go" once the child sits in its cgroup; the child answers "ready" when the
//! container is fully set up, or sends the real error that stopped it (so the user sees
//! "mount proc on /proc: EPERM", not "channel broken").

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use crate::error::{Context, Error, Result};

const GO: u8 = b'G';
const READY: u8 = b'R';
const FAILED: u8 = b'E';

/// The parent's end.
pub struct ParentChannel(UnixStream);
/// The child's end.
pub struct ChildChannel(UnixStream);

impl AsFd for ChildChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A connected pair; both ends are close-on-exec.
pub fn channel() -> Result<(ParentChannel, ChildChannel)> {
    let (a, b) = UnixStream::pair().context(|| "create the setup socket pair".into())?;
    Ok((ParentChannel(a), ChildChannel(b)))
}

impl ParentChannel {
    /// Lets the child go on with its setup.
    pub fn send_go(&mut self) -> Result<()> {
        self.0.write_all(&[GO]).context(|| "signal the container init".into())
    }

    /// Waits for the child's verdict: `Ok` when it is ready, its own error otherwise.
    pub fn wait_ready(&mut self) -> Result<()> {
        let mut tag = [0u8; 1];
        match self.0.read(&mut tag) {
            Ok(1) if tag[0] == READY => Ok(()),
            Ok(1) if tag[0] == FAILED => {
                let mut msg = String::new();
                let _ = self.0.read_to_string(&mut msg);
                Err(Error::Init(msg))
            }
            Ok(_) => Err(Error::Init("the container init exited during setup".into())),
            Err(e) => Err(Error::Init(format!("reading from the container init: {e}"))),
        }
    }
}

impl ChildChannel {
    /// The child's end taken over from an inherited descriptor (the re-executed init).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> ChildChannel {
        ChildChannel(UnixStream::from(fd))
    }

    /// Waits for the parent's "go"; an error means the parent is gone.
    pub fn wait_go(&mut self) -> Result<()> {
        let mut tag = [0u8; 1];
        match self.0.read(&mut tag) {
            Ok(1) if tag[0] == GO => Ok(()),
            _ => Err(Error::Init("the runtime went away during setup".into())),
        }
    }

    /// Reports that the container is set up.
    pub fn send_ready(&mut self) -> Result<()> {
        self.0.write_all(&[READY]).context(|| "report readiness to the runtime".into())
    }

    /// Reports the error that stopped the setup.
    pub fn send_error(&mut self, err: &Error) {
        let mut msg = vec![FAILED];
        // The parent wraps the text in its own Error::Init; do not say "init failed" twice.
        let text = match err {
            Error::Init(inner) => inner.clone(),
            other => other.to_string(),
        };
        msg.extend_from_slice(text.as_bytes());
        let _ = self.0.write_all(&msg);
    }
}
