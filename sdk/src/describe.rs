//! Builds the plugin's [`Description`].

use crate::{CaptureSpec, Description, IfaceKind, OptionSpec, OptionType};

/// Fluent builder for [`Description`].
pub struct DescriptionBuilder(Description);

impl DescriptionBuilder {
    pub fn new(name: &str, version: &str) -> Self {
        DescriptionBuilder(Description {
            name: name.to_string(),
            version: version.to_string(),
            cni_kinds: Vec::new(),
            capture: Vec::new(),
            options: Vec::new(),
            vxlan_ports: Vec::new(),
            geneve_ports: Vec::new(),
        })
    }

    pub fn cni(mut self, kind: &str) -> Self {
        self.0.cni_kinds.push(kind.to_string());
        self
    }

    /// Wants both directions of interfaces matching `pattern` (a `*` glob).
    pub fn capture(mut self, pattern: &str, kind: IfaceKind) -> Self {
        self.0.capture.push(CaptureSpec {
            pattern: pattern.to_string(),
            kind,
            ingress: true,
            egress: true,
        });
        self
    }

    /// Declares an option; `default` is JSON text, "" when required.
    pub fn option(mut self, name: &str, ty: OptionType, default: &str, doc: &str) -> Self {
        self.0.options.push(OptionSpec {
            name: name.to_string(),
            type_: ty,
            default: default.to_string(),
            doc: doc.to_string(),
        });
        self
    }

    pub fn vxlan_port(mut self, port: u16) -> Self {
        self.0.vxlan_ports.push(port);
        self
    }

    pub fn geneve_port(mut self, port: u16) -> Self {
        self.0.geneve_ports.push(port);
        self
    }

    pub fn build(self) -> Description {
        self.0
    }
}
