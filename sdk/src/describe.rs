//! Builds the plugin's [`Description`] and its [`Decoding`] needs.

use crate::{CaptureSpec, Decoding, Description, IfaceKind, ObjectKind, OptionSpec, OptionType};

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
            objects: Vec::new(),
            pod_annotations: Vec::new(),
        })
    }

    /// Reads the pod annotation `key` (`Pod::annotation`): the host hands over only the
    /// annotations plugins ask for, since a cluster's pods carry many and plugins read few.
    pub fn pod_annotation(mut self, key: &str) -> Self {
        self.0.pod_annotations.push(key.to_string());
        self
    }

    /// Reads the CNI's own objects of this kind (`"crd.projectcalico.org/v1"`,
    /// `"IPAMBlock"`): the host hands them over in `Inventory::objects`
    /// ([`crate::inventory::objects_of`]).
    pub fn object(mut self, api_version: &str, kind: &str) -> Self {
        self.0.objects.push(ObjectKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        });
        self
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

    pub fn build(self) -> Description {
        self.0
    }
}

/// Fluent builder for [`Decoding`]: what a configured plugin needs the decoders to decode.
#[derive(Default)]
pub struct DecodingBuilder {
    vxlan: Vec<u16>,
    geneve: Vec<u16>,
    udp_encap: Vec<u16>,
    classes: Vec<u16>,
}

impl DecodingBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// UDP `port` carries VXLAN.
    pub fn vxlan_port(mut self, port: u16) -> Self {
        self.vxlan.push(port);
        self
    }

    /// UDP `port` carries Geneve.
    pub fn geneve_port(mut self, port: u16) -> Self {
        self.geneve.push(port);
        self
    }

    /// UDP `port` carries a raw IP packet.
    pub fn udp_encap_port(mut self, port: u16) -> Self {
        self.udp_encap.push(port);
        self
    }

    /// The plugin reads Geneve options of `class`: live capture keeps that one.
    pub fn geneve_option_class(mut self, class: u16) -> Self {
        self.classes.push(class);
        self
    }

    pub fn build(self) -> Decoding {
        Decoding {
            vxlan_ports: self.vxlan,
            geneve_ports: self.geneve,
            udp_encap_ports: self.udp_encap,
            geneve_option_classes: self.classes,
        }
    }
}
