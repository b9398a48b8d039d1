//! From one stitched connection to one logical flow, by OVN-Kubernetes' and OpenShift-SDN's
//! rules (docs/cni-rules.md): decode Geneve and its OVN option, name pods by (datapath, port key)
//! when the southbound database is known and by inner addresses otherwise; the management
//! port, router port, join, transit and masquerade addresses are the node; stitch a ClusterIP
//! to its backend by fingerprint (the SDK); OpenShift-SDN's VXLAN VNI is the project's NETID.

use crate::cluster::{Cluster, Settings};
use cniscope_sdk::prelude::*;

/// OVN's Geneve option: class 0x0102 (Open Virtual Networking), type 0x80, 4 bytes: a
/// reserved bit, the 15-bit ingress and the 16-bit egress logical port keys.
pub const OVN_OPTION: (u16, u8) = (0x0102, 0x80);

/// Emits the connection's logical flow into `out`, unless it is control traffic.
pub fn flow(c: &Cluster, e: &Settings, conn: &Connection, out: &mut Flows) {
    let Some(mut decision) = conn.decide(&c.index, |m, side| c.class(m, side, &conn.point(m).node))
    else {
        return;
    };
    let mut device = None;
    for m in &conn.members {
        match m.tunnel {
            Tunnel::Geneve if m.outer_dst_port == e.geneve_port => {
                decision.evidence.push("ovn:geneve");
                device = Some("genev_sys_6081");
            }
            Tunnel::Vxlan if m.outer_dst_port == e.sdn_vxlan_port && c.between_nodes(m) => {
                decision.evidence.push("openshift-sdn:vxlan");
                device = Some("vxlan_sys_4789");
            }
            _ => {}
        }
    }
    // The path: the pods' veths, OVS's tunnel port device (genev_sys_6081, vxlan_sys_4789)
    // and the uplinks (br-ex or the NIC). A connection lost before any tunnel view shows no
    // encapsulation: its path is veths and uplinks.
    decision.path = Some(decision.usual_path(&c.index, conn, device));
    conn.emit(out, decision);
}
