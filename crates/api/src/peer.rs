//! Who is on the other end of a connection, and whether they may use the API.
//!
//! The kernel's word is taken (`SO_PEERCRED`: uid, gid and pid at connect
//! time; `SO_PEERGROUPS`: the supplementary groups), never anything the peer
//! sends. Root is always allowed; anyone else must be listed in
//! `api.allowed_uids`, or have one of `api.allowed_gids` as primary or
//! supplementary group — so `usermod -aG secflow alice` is enough.

use std::os::fd::AsRawFd;

use serde::Serialize;
use tokio::net::UnixStream;

/// The peer's credentials as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (empty where the kernel cannot tell).
    pub groups: Vec<u32>,
}

/// The peer's credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the peer credentials of a connection")]
pub struct PeerError(#[source] pub std::io::Error);

impl Peer {
    /// Reads the credentials of a connected stream.
    pub fn of(stream: &UnixStream) -> Result<Peer, PeerError> {
        let cred = stream.peer_cred().map_err(PeerError)?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(stream).unwrap_or_default(),
        })
    }

    /// Whether this peer may use the API under the given allow-lists.
    pub fn is_allowed(&self, allowed_uids: &[u32], allowed_gids: &[u32]) -> bool {
        self.uid == 0
            || allowed_uids.contains(&self.uid)
            || allowed_gids.contains(&self.gid)
            || self.groups.iter().any(|g| allowed_gids.contains(g))
    }
}

/// `SO_PEERGROUPS` (Linux 4.13+), which libc does not export: 59 in the
/// kernel's generic socket option table (mips and powerpc included), 0x3d on sparc.
const SO_PEERGROUPS: libc::c_int = if cfg!(any(target_arch = "sparc", target_arch = "sparc64")) {
    0x3d
} else {
    59
};

/// The peer's supplementary groups; `None` when the kernel does not say.
fn peer_groups(stream: &UnixStream) -> Option<Vec<u32>> {
    // NGROUPS_MAX is 65536; ask with a small buffer first, then with the size
    // the kernel reports (ERANGE) if the peer has more groups.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the fd is a live socket owned by `stream` for the whole call;
        // `groups` is a writable buffer of exactly `len` bytes, and the kernel
        // writes at most `len` bytes and stores the size it needs in `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count.min(groups.len()));
            return Some(groups);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || count <= groups.len()
        {
            return None;
        }
        groups.resize(count, 0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_is_always_allowed_and_others_only_when_listed() {
        assert!(peer(0, 0, &[]).is_allowed(&[], &[]));
        assert!(!peer(1000, 1000, &[]).is_allowed(&[], &[]));
        assert!(peer(1000, 1000, &[]).is_allowed(&[1000], &[]));
        assert!(peer(1000, 1000, &[]).is_allowed(&[], &[1000]));
    }

    #[test]
    fn a_supplementary_group_in_allowed_gids_is_enough() {
        assert!(peer(1000, 1000, &[27, 990]).is_allowed(&[], &[990]));
        assert!(!peer(1000, 1000, &[27]).is_allowed(&[1001], &[990]));
    }

    #[tokio::test]
    async fn the_kernel_reports_this_process_as_the_peer_of_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = Peer::of(&a).unwrap();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert_eq!(me.gid, nix::unistd::getgid().as_raw());
        assert_eq!(me.pid, Some(std::process::id() as i32));
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        mine.sort();
        let mut reported: Vec<u32> = peer_groups(&a).expect("SO_PEERGROUPS answers");
        reported.sort();
        assert_eq!(reported, mine, "the supplementary groups are the kernel's");
    }
}
