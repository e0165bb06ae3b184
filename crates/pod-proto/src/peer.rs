//! Who is on the other end of a socket, according to the kernel.
//!
//! `SO_PEERCRED` is recorded by the kernel when the peer connected; it cannot
//! be forged by anything the peer writes. Servers refuse peers of another
//! user, and anything that later needs the caller's identity (the
//! coordination store, leases) takes it from here.

use std::os::fd::AsFd;

use interprocess::local_socket::tokio::Stream;

use crate::ProtoError;

/// The peer's process, user and group at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads `SO_PEERCRED` from the socket behind `stream`.
pub fn peer_cred(stream: &Stream) -> Result<PeerCred, ProtoError> {
    let Stream::UdSocket(inner) = stream;
    peer_cred_of(inner.as_fd())
}

/// Reads `SO_PEERCRED` from any connected Unix socket.
pub fn peer_cred_of<Fd: AsFd>(fd: Fd) -> Result<PeerCred, ProtoError> {
    let cred = rustix::net::sockopt::socket_peercred(fd).map_err(std::io::Error::from)?;
    let pid = u32::try_from(cred.pid.as_raw_nonzero().get())
        .map_err(|_| ProtoError::PeerRefused("peer reported a negative pid".into()))?;
    Ok(PeerCred { pid, uid: cred.uid.as_raw(), gid: cred.gid.as_raw() })
}

/// Our own effective uid, the only uid a server accepts.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses a peer that runs as another user than this process.
pub fn require_same_user(peer: &PeerCred) -> Result<(), ProtoError> {
    let ours = own_uid();
    if peer.uid != ours {
        return Err(ProtoError::PeerRefused(format!(
            "process {} runs as uid {}, this server only serves uid {ours}",
            peer.pid, peer.uid
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketpair_reports_our_own_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let cred = peer_cred_of(&a).expect("peercred");
        assert_eq!(cred.pid, std::process::id());
        assert_eq!(cred.uid, own_uid());
        assert!(require_same_user(&cred).is_ok());
        let other = PeerCred { uid: cred.uid.wrapping_add(1), ..cred };
        assert_eq!(require_same_user(&other).expect_err("refused").code(), "proto.peer_refused");
    }
}
