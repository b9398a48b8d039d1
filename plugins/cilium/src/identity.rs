//! Cilium's security identities (docs/cni-rules.md, "Cilium"). In tunnel mode the VXLAN VNI
//! (or Geneve VNI) of every packet is the *sender's* identity, not a network id: the numbers
//! below 256 are reserved for what is no workload (the node itself, the world outside, the
//! health endpoint...), cluster-wide identities start at 256 and stand for a set of labels
//! (namespace, app, service account) that every pod of one workload shares.

/// The first identity Cilium allocates to a set of workload labels; below it, reserved ones.
pub const MIN_CLUSTER_IDENTITY: u32 = 256;

/// What an identity number says before any object is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// 0: no identity known (Cilium never sends it on purpose).
    Unknown,
    /// 1 `reserved:host` (the sending node itself), 6 `reserved:remote-node`, 7
    /// `reserved:kube-apiserver` (a node running the API server): a node.
    Node,
    /// 2 `reserved:world`, 9 `reserved:world-ipv4`, 10 `reserved:world-ipv6`: outside the
    /// cluster (a NodePort client forwarded to a remote backend keeps it).
    World,
    /// 4 `reserved:health`: the node's cilium-health endpoint.
    Health,
    /// 100-107: the well-known identities of the kvstore mode (etcd-operator, cilium-etcd,
    /// kube-dns, core-dns, cilium-operator...): pods, named by their endpoints like any other.
    WellKnown,
    /// 3 unmanaged, 5 init, 8 ingress, 11 encrypted-overlay, and the rest of the reserved
    /// range: no workload to name.
    Other,
}

/// The reserved meaning of `id`, None for a cluster identity (>= 256).
pub fn reserved(id: u32) -> Option<Reserved> {
    // Cluster Mesh puts the cluster id above bit 16: identity = cluster_id << 16 | local.
    if id >= MIN_CLUSTER_IDENTITY {
        return None;
    }
    Some(match id {
        0 => Reserved::Unknown,
        1 | 6 | 7 => Reserved::Node,
        2 | 9 | 10 => Reserved::World,
        4 => Reserved::Health,
        100..=107 => Reserved::WellKnown,
        _ => Reserved::Other,
    })
}

/// Whether `id` stands for pods, so their endpoints can name them.
pub fn is_workload(id: u32) -> bool {
    matches!(reserved(id), None | Some(Reserved::WellKnown))
}

/// The evidence a reserved identity on a connection's packets adds.
pub fn evidence(r: Reserved) -> &'static str {
    match r {
        Reserved::Node => "cilium:identity-node",
        Reserved::World => "cilium:identity-world",
        Reserved::Health => "cilium:identity-health",
        Reserved::WellKnown => "cilium:identity-well-known",
        Reserved::Unknown | Reserved::Other => "cilium:identity-reserved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_identities_are_named_and_cluster_ones_are_not() {
        assert_eq!(reserved(1), Some(Reserved::Node));
        assert_eq!(reserved(6), Some(Reserved::Node));
        assert_eq!(reserved(2), Some(Reserved::World));
        assert_eq!(reserved(4), Some(Reserved::Health));
        assert_eq!(reserved(0), Some(Reserved::Unknown));
        assert_eq!(reserved(104), Some(Reserved::WellKnown));
        assert!(is_workload(104) && is_workload(300) && !is_workload(1) && !is_workload(3));
        assert_eq!(reserved(3), Some(Reserved::Other));
        assert_eq!(reserved(255), Some(Reserved::Other));
        assert_eq!(reserved(256), None);
        assert_eq!(reserved(48_213), None);
        assert_eq!(reserved((3 << 16) | 300), None, "a Cluster Mesh identity");
    }
}
