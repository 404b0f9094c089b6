//! Frames captured on a test interface: an `AF_PACKET` socket bound to it,
//! for the tests that check what lbha puts on the wire (gratuitous ARP,
//! the source MAC of its adverts).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// An `AF_PACKET` socket receiving the frames of one EtherType on one
/// interface of the calling thread's network namespace (open it inside
/// [`crate::in_netns`]), with a 200 ms receive timeout so that a capture
/// loop can watch its own deadline.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn open(interface: &str, ethertype: u16) -> io::Result<Self> {
        let name = std::ffi::CString::new(interface)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a plain syscall; the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ethertype.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = ifindex as i32;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid pointers and sizes, on our own socket.
        unsafe {
            if libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Self { fd })
    }

    /// The next frame into `frame`: its length, or `None` when nothing came
    /// within the timeout.
    pub fn recv(&self, frame: &mut [u8]) -> Option<usize> {
        // SAFETY: a valid buffer of that length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                frame.as_mut_ptr().cast(),
                frame.len(),
                0,
            )
        };
        usize::try_from(n).ok()
    }
}
