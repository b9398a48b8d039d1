//! Running code inside a node's network namespace, and what we ask of it there.
//!
//! `setns` changes the namespace of the calling *thread* only, so work in another namespace
//! runs on a short-lived scoped thread; the agent's own threads never leave theirs.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` in the network namespace at `netns` (e.g. `/run/netns/<name>`), or here if None.
pub fn run_in<R: Send>(netns: Option<&Path>, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let Some(path) = netns else { return Ok(f()) };
    let file = std::fs::File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace file we opened; affects only this scoped thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("namespace worker panicked"))?
    })
}

/// Link changes in one namespace, from the kernel: a NETLINK_ROUTE socket subscribed to
/// RTMGRP_LINK, opened in that namespace (a socket keeps the namespace it was made in), so
/// the agent hears of a new pod's veth when it appears rather than at its next scan.
pub struct LinkWatch {
    fd: std::os::fd::OwnedFd,
}

impl LinkWatch {
    /// Subscribes in the current namespace (call it through [`run_in`]).
    pub fn open() -> io::Result<LinkWatch> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: bind with a sockaddr_nl of the size we pass.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkWatch { fd })
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Reads every pending message; true if any arrived (or some were lost: the socket's
    /// buffer overflowed, so something changed).
    pub fn changed(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: recv into a buffer we own, of the length we pass.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                any = true;
                continue;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                any = true;
                continue;
            }
            return any;
        }
    }
}

/// Waits up to `timeout` for any of `watches` to have news; true if one has.
pub fn wait_for_links(watches: &[&LinkWatch], timeout: std::time::Duration) -> bool {
    if watches.is_empty() {
        std::thread::sleep(timeout);
        return false;
    }
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| libc::pollfd {
            fd: w.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll over pollfds we own, of the count we pass.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    n > 0
}

/// The namespace's interfaces as (ifindex, name), from `if_nameindex(3)`.
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        Ok(out)
    }
}

/// Whether packets on `iface` start at the IP header (TUN, IPIP, GRE, SIT devices), from the
/// device's hardware type (`SIOCGIFHWADDR`), asked in the current namespace.
pub fn is_l3_device(iface: &str) -> io::Result<bool> {
    const ARPHRD_ETHER: u16 = 1;
    const ARPHRD_LOOPBACK: u16 = 772;
    // SAFETY: a plain socket for the ioctl, closed on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; the name is copied with a terminating zero.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of the ifreq we own. (The request's type is
    // c_ulong in glibc and c_int in musl: `as _` builds with both, for the static image.)
    #[allow(clippy::unnecessary_cast)]
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(err);
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(!matches!(family, ARPHRD_ETHER | ARPHRD_LOOPBACK))
}

/// Glob match on interface names (`veth*`, `flannel.1`, `cali*`, OVN's
/// `[0-9a-f]...` container-ID names): `*` is any run, `?` any one character, `[...]` one of a
/// set (`a-f` ranges, `!` negates), anything else itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    glob_bytes(pattern.as_bytes(), name.as_bytes())
}

fn glob_bytes(p: &[u8], n: &[u8]) -> bool {
    let Some(&c) = p.first() else {
        return n.is_empty();
    };
    if c == b'*' {
        return (0..=n.len()).any(|i| glob_bytes(&p[1..], &n[i..]));
    }
    let Some(&ch) = n.first() else {
        return false;
    };
    let (ok, used) = match c {
        b'?' => (true, 1),
        b'[' => match p.iter().position(|&b| b == b']') {
            Some(end) if end > 1 => {
                let set = &p[1..end];
                let (neg, set) = match set.first() {
                    Some(b'!') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= (set[i]..=set[i + 2]).contains(&ch);
                        i += 3;
                    } else {
                        hit |= set[i] == ch;
                        i += 1;
                    }
                }
                (hit != neg, end + 1)
            }
            _ => (c == ch, 1),
        },
        _ => (c == ch, 1),
    };
    ok && glob_bytes(&p[used..], &n[1..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_link_watch_hears_of_an_interface_created_in_its_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: network namespaces need root");
            return;
        }
        let ns = format!("cslw{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip {args:?}");
        };
        ip(&["netns", "add", &ns]);
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        let _cleanup = Cleanup(ns.clone());
        let path = std::path::PathBuf::from(format!("/run/netns/{ns}"));
        let watch = super::run_in(Some(&path), super::LinkWatch::open)
            .unwrap()
            .unwrap();
        assert!(!watch.changed(), "nothing happened yet");
        ip(&[
            "-n", &ns, "link", "add", "veth-w1", "type", "veth", "peer", "name", "veth-w2",
        ]);
        // Generous: this asserts that news arrives, not how fast.
        assert!(super::wait_for_links(
            &[&watch],
            std::time::Duration::from_secs(10)
        ));
        assert!(watch.changed());
        assert!(!watch.changed(), "read once");
    }

    #[test]
    fn globs() {
        assert!(super::glob("veth*", "veth1a2b"));
        assert!(super::glob("flannel.1", "flannel.1"));
        assert!(!super::glob("flannel.1", "flannel.10"));
        assert!(super::glob("*0", "cni0"));
        assert!(super::glob("e*h*", "eth0"));
        assert!(!super::glob("cali*", "veth0"));
        // OVN names a pod's veth by the first 15 hex digits of its container ID.
        let ovn = "[0-9a-f]".repeat(15);
        assert!(super::glob(&ovn, "3f2a9c1b7d8e4f0"));
        assert!(!super::glob(&ovn, "3f2a9c1b7d8e4f"), "14 characters");
        assert!(!super::glob(&ovn, "ovn-k8s-mp0abcd"));
        assert!(super::glob("eth?", "eth1") && !super::glob("eth?", "eth10"));
        assert!(super::glob("[!v]*", "eth0") && !super::glob("[!v]*", "veth0"));
    }
}
