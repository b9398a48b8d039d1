//! Building [`LogicalFlow`]s and [`Endpoint`]s.

use crate::batch::Obs;
use crate::{Endpoint, Ip, LogicalFlow, Role};

impl Endpoint {
    pub fn pod(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Pod,
            ip,
            name: String::new(),
        }
    }
    /// A node named by the plugin (the host then needs no IP to name it).
    pub fn node(name: &str, ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Node,
            ip,
            name: name.to_string(),
        }
    }
    pub fn service(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Service,
            ip,
            name: String::new(),
        }
    }
    pub fn external(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::External,
            ip,
            name: String::new(),
        }
    }
    pub fn unknown(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Unknown,
            ip,
            name: String::new(),
        }
    }
}

/// Fluent builder for [`LogicalFlow`].
pub struct FlowBuilder(LogicalFlow);

impl FlowBuilder {
    pub fn new(client: Endpoint, server: Endpoint, protocol: u8, server_port: u16) -> Self {
        FlowBuilder(LogicalFlow {
            client,
            server,
            service: None,
            protocol,
            server_port,
            packets: 0,
            bytes: 0,
            first_ns: 0,
            last_ns: 0,
            evidence: Vec::new(),
            observed_at: Vec::new(),
            confidence: 1.0,
        })
    }

    pub fn service(mut self, service: Endpoint) -> Self {
        self.0.service = Some(service);
        self
    }

    /// Adds the counters of `obs` (the point this flow is counted at).
    pub fn counters_from(mut self, obs: &Obs<'_>) -> Self {
        self.0.packets += obs.packets();
        self.0.bytes += obs.bytes();
        self.0.first_ns = if self.0.first_ns == 0 {
            obs.first_ns()
        } else {
            self.0.first_ns.min(obs.first_ns())
        };
        self.0.last_ns = self.0.last_ns.max(obs.last_ns());
        self.observed_at(obs.point_label())
    }

    pub fn counters(mut self, packets: u64, bytes: u64, first_ns: u64, last_ns: u64) -> Self {
        self.0.packets = packets;
        self.0.bytes = bytes;
        self.0.first_ns = first_ns;
        self.0.last_ns = last_ns;
        self
    }

    pub fn evidence(mut self, label: &str) -> Self {
        if !self.0.evidence.iter().any(|e| e == label) {
            self.0.evidence.push(label.to_string());
        }
        self
    }

    pub fn observed_at(mut self, point: String) -> Self {
        if !self.0.observed_at.contains(&point) {
            self.0.observed_at.push(point);
        }
        self
    }

    pub fn confidence(mut self, c: f32) -> Self {
        self.0.confidence = c.clamp(0.0, 1.0);
        self
    }

    pub fn build(self) -> LogicalFlow {
        self.0
    }
}
