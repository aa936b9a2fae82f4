//! `kill`: sends a signal to a container's init.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Container;
use crate::error::{Error, Result};
use crate::state::Status;

impl Container {
    /// Sends `signal` to the container's init process.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        let status = self.status();
        if status == Status::Stopped {
            return Err(Error::WrongStatus {
                id: self.id().into(),
                status: status.to_string(),
                what: "there is no process to signal".into(),
            });
        }
        kill(Pid::from_raw(self.pid()), signal)
            .map_err(|source| Error::Sys { what: format!("send {signal} to container {}", self.id()), source })
    }
}

/// Parses a signal given as a name (`TERM`, `SIGTERM`, `term`) or a number (`15`).
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::UnknownSignal(text.into()));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse().map_err(|_| Error::UnknownSignal(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
