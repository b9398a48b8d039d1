//! Calico's host-side veth names: `cali` + the first 11 hex characters of
//! `sha1("<namespace>.<pod name>")` (libcalico-go's `VethNameForWorkload`), 15 characters, the
//! kernel's limit. The name survives IP reuse: it is the pod, whatever address it has.

use sha1::{Digest, Sha1};

/// The prefix Calico's CNI plugin uses by default (`FELIX_INTERFACEPREFIX=cali`).
pub const PREFIX: &str = "cali";

/// The host-side veth name of pod `namespace/name`.
pub fn veth_name(namespace: &str, name: &str) -> String {
    let mut h = Sha1::new();
    h.update(namespace.as_bytes());
    h.update(b".");
    h.update(name.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(15);
    out.push_str(PREFIX);
    for b in digest.iter() {
        for nibble in [b >> 4, b & 0xf] {
            if out.len() == 15 {
                return out;
            }
            out.push(char::from_digit(nibble as u32, 16).expect("a nibble"));
        }
    }
    out
}

/// A `cali` veth name as a number (its 11 hex characters), to key maps without a string per
/// pod; `None` for any other name.
pub fn veth_key(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(PREFIX)?;
    if hex.len() != 11 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_keys_tell_names_apart_and_refuse_others() {
        let a = veth_key(&veth_name("default", "a")).unwrap();
        let b = veth_key(&veth_name("default", "b")).unwrap();
        assert_ne!(a, b);
        for other in [
            "eth0",
            "cali",
            "calixyz",
            "cali0123456789a0",
            "cali0123456789g",
        ] {
            assert_eq!(veth_key(other), None, "{other}");
        }
    }

    #[test]
    fn matches_sha1_of_namespace_dot_name() {
        for (ns, pod, want) in KNOWN {
            assert_eq!(veth_name(ns, pod), *want, "{ns}/{pod}");
        }
    }

    /// Computed outside Rust, as microk8s' dump-workload-endpoints.sh does:
    /// `printf '%s' "$ns.$pod" | sha1sum | cut -c1-11`.
    const KNOWN: &[(&str, &str, &str)] = &[
        ("default", "nginx", "calic440f455693"),
        ("kube-system", "coredns-7db6d8ff4d-x2x9q", "cali797cba8da33"),
        ("default", "client-a1", "cali3fa1bcce13b"),
        ("prod", "api-5d4f8b7c9-abcde", "cali05a35c2b6be"),
    ];
}
