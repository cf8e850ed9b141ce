//! Kernel uevents (netlink `NETLINK_KOBJECT_UEVENT`): the devices that appear after
//! coldplug (behind a bus driver coldplug loaded, or plugged in later), whose modules must
//! load too.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::coldplug::device_modaliases;

/// The multicast group the kernel sends its uevents to.
const KERNEL_GROUP: u32 = 1;
/// The socket's receive buffer: a burst of devices (a bus driver probing) must not overflow
/// it.
const RECEIVE_BUFFER: usize = 4 << 20;
/// The largest uevent the kernel sends (`UEVENT_BUFFER_SIZE`).
const MESSAGE_SIZE: usize = 2048;

/// The uevent socket failed.
#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    /// A socket call failed.
    #[error("uevent socket: {operation}: {errno}")]
    Socket {
        /// The call.
        operation: &'static str,
        /// Why.
        errno: Errno,
    },
    /// Uevents were lost (the receive buffer overflowed): look at the devices again.
    #[error("uevents were lost: the socket's receive buffer overflowed")]
    Overflow,
}

/// One uevent, the parts of it that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `bind`, `change`...
    pub action: String,
    /// The device's `MODALIAS`, if it has one.
    pub modalias: Option<String>,
}

impl Uevent {
    /// Parses a kernel uevent: `ACTION@DEVPATH`, then `KEY=VALUE` strings, NUL-separated.
    /// Anything else (libudev's messages start with `libudev`) is not one.
    pub fn parse(message: &[u8]) -> Option<Uevent> {
        let mut fields = message.split(|b| *b == 0).map(String::from_utf8_lossy);
        let header = fields.next()?;
        let (action, _devpath) = header.split_once('@')?;
        let mut event = Uevent { action: action.to_string(), modalias: None };
        for field in fields {
            if let Some(modalias) = field.strip_prefix("MODALIAS=") {
                event.modalias = Some(modalias.to_string());
            }
        }
        Some(event)
    }

    /// The modalias of a device this event adds.
    pub fn added_modalias(&self) -> Option<&str> {
        (self.action == "add").then_some(self.modalias.as_deref()).flatten()
    }
}

/// A socket subscribed to the kernel's uevents.
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Subscribes; with `timeout`, [`UeventSocket::next`] returns `None` after that long
    /// without an event.
    pub fn open(timeout: Option<Duration>) -> Result<UeventSocket, UeventError> {
        let fail = |operation| move |errno| UeventError::Socket { operation, errno };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(fail("socket"))?;
        // Forced past rmem_max: PID 1 may.
        if let Err(errno) = setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER) {
            tracing::warn!("uevent socket: a {RECEIVE_BUFFER}-byte buffer: {errno}");
        }
        if let Some(timeout) = timeout {
            setsockopt(&fd, sockopt::ReceiveTimeout, &receive_timeout(timeout))
                .map_err(fail("timeout"))?;
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map_err(fail("bind"))?;
        Ok(UeventSocket { fd })
    }

    /// The next uevent from the kernel; `None` when the timeout passed or the message came
    /// from anyone else.
    pub fn next(&self) -> Result<Option<Uevent>, UeventError> {
        let mut buffer = [0u8; MESSAGE_SIZE];
        match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut buffer) {
            // Port 0 is the kernel: a process on the group may not speak for it.
            Ok((length, Some(from))) if from.pid() == 0 => Ok(Uevent::parse(&buffer[..length])),
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(None),
            Err(Errno::ENOBUFS) => Err(UeventError::Overflow),
            Err(errno) => Err(UeventError::Socket { operation: "recvfrom", errno }),
        }
    }

    /// The modaliases whose modules to load next: that of the device the next uevent adds
    /// (none when the timeout passed or the event adds none), or, when events were lost,
    /// every device's below `devices` (`/sys/devices`).
    pub fn next_modaliases(&self, devices: &Path) -> Result<Vec<String>, UeventError> {
        match self.next() {
            Ok(event) => {
                Ok(event.and_then(|e| e.added_modalias().map(str::to_string)).into_iter().collect())
            }
            Err(UeventError::Overflow) => {
                tracing::warn!("uevents were lost; looking at every device again");
                Ok(device_modaliases(devices))
            }
            Err(e) => Err(e),
        }
    }
}

/// `timeout` as `SO_RCVTIMEO` takes it, its seconds capped at what `time_t` holds.
// time_t and suseconds_t are 64 bits here and 32 on armv7, where the conversions can fail.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn receive_timeout(timeout: Duration) -> TimeVal {
    let seconds = timeout.as_secs().try_into().unwrap_or(nix::libc::time_t::MAX);
    let micros = timeout.subsec_micros().try_into().expect("below a million: fits 32 bits");
    TimeVal::new(seconds, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_timeouts_keep_microseconds_and_cap_seconds_at_time_t() {
        let timeout = receive_timeout(Duration::from_micros(2_500_001));
        assert_eq!((timeout.tv_sec(), timeout.tv_usec()), (2, 500_001));
        let forever = receive_timeout(Duration::new(u64::MAX, 999_999_999));
        assert_eq!((forever.tv_sec(), forever.tv_usec()), (nix::libc::time_t::MAX, 999_999));
    }

    #[test]
    fn parses_kernel_uevents() {
        let add = b"add@/devices/pci0000:00/0000:00:02.0/virtio0\0ACTION=add\0\
            DEVPATH=/devices/pci0000:00/0000:00:02.0/virtio0\0SUBSYSTEM=virtio\0\
            MODALIAS=virtio:d00000002v00001AF4\0SEQNUM=1234\0";
        let event = Uevent::parse(add).unwrap();
        assert_eq!(event.action, "add");
        assert_eq!(event.added_modalias(), Some("virtio:d00000002v00001AF4"));
        let bind = b"bind@/devices/x\0ACTION=bind\0MODALIAS=virtio:d00000002v00001AF4\0";
        assert_eq!(Uevent::parse(bind).unwrap().added_modalias(), None);
        let no_alias = Uevent::parse(b"add@/devices/virtual/net/lo\0ACTION=add\0").unwrap();
        assert_eq!(no_alias, Uevent { action: "add".into(), modalias: None });
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
    }
}
