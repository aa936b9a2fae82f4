//! Terminals for `process.terminal: true`: a pty is opened from the container's own devpts
//! (`/dev/ptmx -> pts/ptmx`), its master is handed to whoever listens on `--console-socket`
//! (conmon, containerd's shim, podman) with SCM_RIGHTS, and its slave becomes the process's
//! controlling terminal and stdio. For a container's init the slave is also bound on
//! `/dev/console`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::{Context, Result};
use crate::sys;

/// Opens a pty in the current mount namespace (after the pivot), sends its master over
/// `socket`, and makes its slave our controlling terminal and stdio.
pub fn attach_new_terminal(socket: &UnixStream, bind_console: bool) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context(|| "open /dev/ptmx in the container (does it mount devpts on /dev/pts?)".into())?;
    grantpt(&master).context(|| "grantpt".into())?;
    unlockpt(&master).context(|| "unlockpt".into())?;
    let slave_name = ptsname_r(&master).context(|| "ptsname".into())?;
    let slave: OwnedFd = sys::open(std::path::Path::new(&slave_name), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context(|| format!("open {slave_name}"))?;
    if bind_console {
        let console = std::path::Path::new("/dev/console");
        if !console.exists() {
            std::fs::File::create(console).context(|| "create /dev/console".into())?;
        }
        mount(Some(slave_name.as_str()), console, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .context(|| format!("bind {slave_name} on /dev/console"))?;
    }
    let fds = [master.as_raw_fd()];
    let name = slave_name.as_bytes();
    sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(name)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .context(|| "send the pty master to --console-socket".into())?;
    drop(master);
    nix::unistd::setsid().context(|| "setsid".into())?;
    sys::set_controlling_terminal(&slave).context(|| "make the pty our controlling terminal".into())?;
    for target in 0..=2 {
        nix::unistd::dup2(slave.as_raw_fd(), target).context(|| format!("dup the pty onto fd {target}"))?;
    }
    Ok(())
}
