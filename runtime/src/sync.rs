//! The channel between the runtime (parent) and the container's init (child) during setup.
//!
//! The parent says "go" once the child sits in its cgroup; the child answers "ready" when the
//! container is fully set up, or sends the real error that stopped it (so the user sees
//! "mount proc on /proc: EPERM", not "channel broken"). In between, the child may ask for what
//! only the parent can do:
//! - **map**: the child is in its user namespace; the parent writes its uid_map and gid_map (a
//!   new namespace) and answers with the idmapped mounts it made for the rootfs and the volumes
//!   (descriptors of detached mounts, passed with `SCM_RIGHTS`);
//! - **pid**: the child forked the container's pid 1 inside a pid namespace of its user namespace
//!   and exits; the parent takes that pid as the init's and acknowledges, and only then does the
//!   new pid 1 go on (so nothing it says can overtake the pid);
//! - **hooks**: the container's namespaces and mounts exist; the parent runs the prestart and
//!   createRuntime hooks and answers with the state JSON the child's own hooks get.
//!
//! Every message is a frame: one tag byte, a little-endian u32 length, the payload.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::sys;

const GO: u8 = b'G';
const READY: u8 = b'R';
const FAILED: u8 = b'E';
const MAP: u8 = b'U';
const MAPPED: u8 = b'M';
const PID: u8 = b'P';
const ACK: u8 = b'A';
const HOOKS: u8 = b'H';
const HOOKS_DONE: u8 = b'h';

/// The most descriptors one message carries (the rootfs and every idmapped volume).
const MAX_FDS: usize = 250;
/// The longest payload we accept (an error text, the state JSON with its annotations).
const MAX_PAYLOAD: usize = 16 << 20;

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

/// Which of the idmapped mounts in a "mapped" answer is which (the descriptors follow in order:
/// the rootfs first if present, then one per listed mount index).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MappedLayout {
    pub rootfs: bool,
    /// Indexes into the spec's `mounts`.
    pub mounts: Vec<usize>,
}

/// The idmapped mounts the child receives after its mapping is written.
#[derive(Debug, Default)]
pub struct IdmappedTrees {
    pub rootfs: Option<OwnedFd>,
    /// (index into the spec's `mounts`, detached idmapped mount).
    pub mounts: Vec<(usize, OwnedFd)>,
}

impl IdmappedTrees {
    /// Takes the idmapped mount made for the spec's mount number `index`, if any.
    pub fn take_mount(&mut self, index: usize) -> Option<OwnedFd> {
        let at = self.mounts.iter().position(|(i, _)| *i == index)?;
        Some(self.mounts.remove(at).1)
    }
}

/// What the child asks the parent while it sets up.
#[derive(Debug)]
pub enum ChildMessage {
    /// Setup is done.
    Ready,
    /// Write the user namespace's maps (if new) and make the idmapped mounts.
    MapRequest,
    /// The container's pid 1 is this host pid; the process that sent this exits.
    Pid(i32),
    /// Run the prestart and createRuntime hooks.
    Hooks,
}

fn write_frame(stream: &UnixStream, tag: u8, payload: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("message too long"))?;
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(tag);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(payload);
    if fds.is_empty() {
        return (&*stream).write_all(&frame);
    }
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&frame)], &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)?;
    (&*stream).write_all(&frame[sent..])
}

/// One received message: tag, payload and the descriptors that came with it.
type Frame = (u8, Vec<u8>, Vec<OwnedFd>);

/// Reads one frame and the descriptors that came with it. `None` at end of stream.
fn read_frame(stream: &UnixStream) -> std::io::Result<Option<Frame>> {
    let mut header = [0u8; 5];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut header)];
        let msg =
            recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                fds.extend(sys::received_fds(raw));
            }
        }
        (msg.bytes, fds)
    };
    if got == 0 {
        return Ok(None);
    }
    (&*stream).read_exact(&mut header[got..])?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::other(format!("a setup message of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    (&*stream).read_exact(&mut payload)?;
    Ok(Some((header[0], payload, fds)))
}

impl ParentChannel {
    /// Lets the child go on with its setup.
    pub fn send_go(&mut self) -> Result<()> {
        write_frame(&self.0, GO, &[], &[]).context(|| "signal the container init".into())
    }

    /// The child's next message; its own error if it failed.
    pub fn recv(&mut self) -> Result<ChildMessage> {
        match read_frame(&self.0) {
            Ok(Some((READY, _, _))) => Ok(ChildMessage::Ready),
            Ok(Some((FAILED, text, _))) => Err(Error::Init(String::from_utf8_lossy(&text).into_owned())),
            Ok(Some((MAP, _, _))) => Ok(ChildMessage::MapRequest),
            Ok(Some((PID, pid, _))) if pid.len() == 4 => Ok(ChildMessage::Pid(i32::from_le_bytes([pid[0], pid[1], pid[2], pid[3]]))),
            Ok(Some((HOOKS, _, _))) => Ok(ChildMessage::Hooks),
            Ok(Some((tag, _, _))) => Err(Error::Init(format!("unexpected message {tag:#x} from the container init"))),
            Ok(None) => Err(Error::Init("the container init exited during setup".into())),
            Err(e) => Err(Error::Init(format!("reading from the container init: {e}"))),
        }
    }

    /// Waits for the child's verdict: `Ok` when it is ready, its own error otherwise.
    pub fn wait_ready(&mut self) -> Result<()> {
        match self.recv()? {
            ChildMessage::Ready => Ok(()),
            other => Err(Error::Init(format!("unexpected {other:?} from the process exec'd into the container"))),
        }
    }

    /// Answers a map request with the idmapped mounts made for the child.
    pub fn send_mapped(&mut self, layout: &MappedLayout, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let payload = serde_json::to_vec(layout).expect("layout serializes");
        write_frame(&self.0, MAPPED, &payload, fds).context(|| "hand the idmapped mounts to the container init".into())
    }

    /// Acknowledges the pid of the container's pid 1.
    pub fn send_ack(&mut self) -> Result<()> {
        write_frame(&self.0, ACK, &[], &[]).context(|| "acknowledge the container's pid".into())
    }

    /// Tells the child the runtime's hooks ran, with the state its own hooks get.
    pub fn send_hooks_done(&mut self, state_json: &[u8]) -> Result<()> {
        write_frame(&self.0, HOOKS_DONE, state_json, &[]).context(|| "resume the container init after the hooks".into())
    }
}

impl ChildChannel {
    /// The child's end taken over from an inherited descriptor (the re-executed init).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> ChildChannel {
        ChildChannel(UnixStream::from(fd))
    }

    fn expect(&mut self, wanted: u8, what: &str) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        match read_frame(&self.0) {
            Ok(Some((tag, payload, fds))) if tag == wanted => Ok((payload, fds)),
            Ok(Some((tag, _, _))) => Err(Error::Init(format!("unexpected message {tag:#x} from the runtime while waiting for {what}"))),
            _ => Err(Error::Init(format!("the runtime went away during setup (waiting for {what})"))),
        }
    }

    /// Waits for the parent's "go"; an error means the parent is gone.
    pub fn wait_go(&mut self) -> Result<()> {
        self.expect(GO, "go").map(drop)
    }

    /// Asks the parent to map our user namespace; returns the idmapped mounts it made.
    pub fn request_mapping(&mut self) -> Result<IdmappedTrees> {
        write_frame(&self.0, MAP, &[], &[]).context(|| "ask the runtime for the id mappings".into())?;
        let (payload, fds) = self.expect(MAPPED, "the id mappings")?;
        let layout: MappedLayout =
            serde_json::from_slice(&payload).map_err(|e| Error::Init(format!("unreadable answer to the map request: {e}")))?;
        let wanted = usize::from(layout.rootfs) + layout.mounts.len();
        if fds.len() != wanted {
            return Err(Error::Init(format!("received {} idmapped mounts, expected {wanted}", fds.len())));
        }
        let mut fds = fds.into_iter();
        let rootfs = if layout.rootfs { fds.next() } else { None };
        Ok(IdmappedTrees { rootfs, mounts: layout.mounts.into_iter().zip(fds).collect() })
    }

    /// Sends the host pid of the container's pid 1 (from the process that forked it).
    pub fn send_pid(&mut self, pid: i32) -> Result<()> {
        write_frame(&self.0, PID, &pid.to_le_bytes(), &[]).context(|| "report the container's pid".into())
    }

    /// Waits until the parent has taken our pid as the init's.
    pub fn wait_ack(&mut self) -> Result<()> {
        self.expect(ACK, "the pid acknowledgement").map(drop)
    }

    /// Asks the parent to run the prestart and createRuntime hooks; returns the state JSON.
    pub fn request_hooks(&mut self) -> Result<Vec<u8>> {
        write_frame(&self.0, HOOKS, &[], &[]).context(|| "ask the runtime to run the hooks".into())?;
        self.expect(HOOKS_DONE, "the runtime's hooks").map(|(json, _)| json)
    }

    /// Reports that the container is set up.
    pub fn send_ready(&mut self) -> Result<()> {
        write_frame(&self.0, READY, &[], &[]).context(|| "report readiness to the runtime".into())
    }

    /// Reports the error that stopped the setup.
    pub fn send_error(&mut self, err: &Error) {
        // The parent wraps the text in its own Error::Init; do not say "init failed" twice.
        let text = match err {
            Error::Init(inner) => inner.clone(),
            other => other.to_string(),
        };
        let _ = write_frame(&self.0, FAILED, text.as_bytes(), &[]);
    }
}
