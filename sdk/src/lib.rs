//! The cniscope plugin SDK.
//!
//! A plugin is a type that implements [`Plugin`] and is exported with [`export_plugin!`]. A
//! CNI plugin implements [`cni::CniRules`] instead (what an address is in each view, what
//! evidence a view adds, its options once) and exports `Cni<TheRules>`: the scaffold owns the
//! stitcher, the option checks and the state; the module's docs hold a whole CNI plugin in
//! under 60 lines, and `cniscope plugin new NAME` writes a crate that starts from it.
//! The SDK owns the WIT bindings (`wit/plugin.wit`), so plugin crates never call
//! `wit_bindgen` themselves, and gives plugin authors:
//!
//! - [`batch::Obs`]: a row view over the columnar [`ObservationBatch`] (columns cross the Wasm
//!   boundary an order of magnitude faster than records; rows are nicer to write rules with);
//! - [`net`]: addresses, CIDR sets and MACs;
//! - [`options::Options`]: the operator's TOML options, with errors that name the option;
//! - [`inventory`]: annotation readers and a pod/node index;
//! - [`flow::FlowBuilder`] and [`flow::Flows`]: logical flows, and the sink that sends them as
//!   columns (use [`flow::FlowRef`] to emit without allocating);
//! - [`stitch::Stitcher`]: one connection out of the views of it at every point, before and
//!   after NAT, counted once; [`cni::Cni`] wraps it for a CNI's rules;
//! - [`testkit`]: build batches by hand and run a plugin natively in unit tests.
//!
//! # A minimal plugin (no stitching)
//!
//! ```
//! use cniscope_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn describe() -> Description {
//!         DescriptionBuilder::new("echo", "0.1.0").cni("any").capture("eth*", IfaceKind::Uplink).build()
//!     }
//!     fn process(&mut self, batch: &ObservationBatch, out: &mut Flows) -> Result<(), PluginError> {
//!         for o in batch_rows(batch) {
//!             let flow = FlowBuilder::new(Endpoint::unknown(o.src_ip()), Endpoint::unknown(o.dst_ip()), o.protocol(), o.dst_port())
//!                 .counters_from(&o)
//!                 .evidence("echo")
//!                 .build();
//!             out.push(&flow);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // In a plugin crate (crate-type = ["cdylib", "rlib"]):
//! // cniscope_sdk::export_plugin!(Echo);
//! let flows = cniscope_sdk::testkit::Harness::<Echo>::new().process(&BatchBuilder::new().build()).unwrap();
//! assert!(flows.is_empty());
//! ```

pub mod batch;
pub mod cni;
pub mod describe;
pub mod ends;
pub mod flow;
pub mod hash;
pub mod inventory;
pub mod net;
pub mod options;
pub mod path;
pub mod pods;
pub mod services;
pub mod state;
pub mod stitch;
pub mod testkit;

/// JSON, for annotations that carry JSON (flannel backend-data, OVN node-subnets).
pub use serde_json as json;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        default_bindings_module: "cniscope_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        additional_derives: [PartialEq],
    });
}

pub use bindings::cniscope::plugin::types::{
    CapturePoint, CaptureSpec, CniObject, Decoding, Description, Direction, EndpointSliceInfo,
    FlowBatch, GeneveOptions, IfaceKind, Inventory, Ip, NodeInfo, ObjectKind, ObservationBatch,
    OptionSpec, OptionType, PluginError, PodTable, ServiceInfo, ServicePort,
};
pub use flow::{Endpoint, LogicalFlow, Role};
pub use pods::{NewPod, Pod};

/// What a CNI plugin implements. The SDK keeps one instance per Wasm instance and calls it
/// from the exported WIT functions.
///
/// Returning `Err` is *data*: the host logs and counts it and the pipeline goes on. A panic
/// is a *trap*: the host drops the instance, marks the plugin degraded and restarts it.
pub trait Plugin: Default + 'static {
    /// Static facts: name, version, CNI kinds, interfaces wanted, options.
    fn describe() -> Description;

    /// Options from the operator's TOML. The default accepts none.
    fn configure(&mut self, options: &options::Options) -> Result<(), PluginError> {
        options.deny_unknown(&[])
    }

    /// What the configured plugin needs the decoders to decode beyond the operator's
    /// `[decode]` section (tunnel ports from its options, Geneve option classes it reads).
    /// Asked right after a successful `configure`. The default needs nothing more.
    fn decoding(&self) -> Decoding {
        describe::DecodingBuilder::new().build()
    }

    /// The whole inventory, whenever it changes.
    fn on_inventory(&mut self, _inventory: Inventory) -> Result<(), PluginError> {
        Ok(())
    }

    /// Observations in; logical flows go to `out` (now, or from a later call).
    fn process(
        &mut self,
        batch: &ObservationBatch,
        out: &mut flow::Flows,
    ) -> Result<(), PluginError>;

    /// End of a correlation window: put everything still held into `out`.
    fn flush(&mut self, _now_ns: u64, _out: &mut flow::Flows) -> Result<(), PluginError> {
        Ok(())
    }

    /// Counters worth an operator's eye (windows stitched early, observations evicted, time
    /// joins: [`stitch::Stitcher::counters`]), cumulative; the host shows them in its health.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// What this plugin carries from one window to the next, for the cluster aggregator's
    /// checkpoint (called after `flush`). A plugin built on [`stitch::Stitcher`] returns
    /// [`stitch::Stitcher::snapshot`]; the default keeps nothing.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes back what [`Plugin::snapshot`] gave, in a new instance after a restart
    /// (configured, with the inventory). The default accepts only an empty state.
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(error(
                "state",
                "",
                "this plugin keeps no state across windows, but was given some",
            ))
        }
    }
}

/// Exports a [`Plugin`] as the component's WIT world. Use once, in the plugin crate's root.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __CniscopeExport;

            ::std::thread_local! {
                static __CNISCOPE_STATE: ::std::cell::RefCell<$plugin> =
                    ::std::cell::RefCell::new(<$plugin as ::core::default::Default>::default());
            }

            impl $crate::bindings::Guest for __CniscopeExport {
                fn describe() -> $crate::Description {
                    <$plugin as $crate::Plugin>::describe()
                }
                fn configure(
                    options: ::std::string::String,
                ) -> Result<$crate::Decoding, $crate::PluginError> {
                    let options = $crate::options::Options::parse(&options)?;
                    __CNISCOPE_STATE.with(|s| {
                        let mut plugin = s.borrow_mut();
                        $crate::Plugin::configure(&mut *plugin, &options)?;
                        Ok($crate::Plugin::decoding(&*plugin))
                    })
                }
                fn on_inventory(snapshot: $crate::Inventory) -> Result<(), $crate::PluginError> {
                    __CNISCOPE_STATE
                        .with(|s| $crate::Plugin::on_inventory(&mut *s.borrow_mut(), snapshot))
                }
                fn process(
                    batch: $crate::ObservationBatch,
                ) -> Result<$crate::FlowBatch, $crate::PluginError> {
                    let mut out = $crate::flow::Flows::new();
                    __CNISCOPE_STATE.with(|s| {
                        $crate::Plugin::process(&mut *s.borrow_mut(), &batch, &mut out)
                    })?;
                    Ok(out.into_batch())
                }
                fn flush(now_ns: u64) -> Result<$crate::FlowBatch, $crate::PluginError> {
                    let mut out = $crate::flow::Flows::new();
                    __CNISCOPE_STATE
                        .with(|s| $crate::Plugin::flush(&mut *s.borrow_mut(), now_ns, &mut out))?;
                    Ok(out.into_batch())
                }
                fn counters() -> ::std::vec::Vec<(::std::string::String, u64)> {
                    __CNISCOPE_STATE.with(|s| $crate::Plugin::counters(&*s.borrow()))
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    __CNISCOPE_STATE.with(|s| $crate::Plugin::snapshot(&*s.borrow()))
                }
                fn restore(state: ::std::vec::Vec<u8>) -> Result<(), $crate::PluginError> {
                    __CNISCOPE_STATE.with(|s| $crate::Plugin::restore(&mut *s.borrow_mut(), &state))
                }
            }

    $crate::bindings::__export_world!(__CniscopeExport with_types_in $crate::bindings);
        };
    };
}

/// Builds a [`PluginError`].
pub fn error(code: &str, field: &str, message: impl Into<String>) -> PluginError {
    PluginError {
        code: code.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::batch::{Obs, Tunnel, batch_rows};
    pub use crate::cni::{Cni, CniRules};
    pub use crate::describe::{DecodingBuilder, DescriptionBuilder};
    pub use crate::ends::{Class, Decision, Ends, Side};
    pub use crate::flow::{EndpointRef, FlowBuilder, FlowRef, Flows};
    pub use crate::inventory::{Annotations, InventoryIndex, warnings_to_result};
    pub use crate::net::{Cidr, CidrSet, Mac, ip_from_std, ip_to_std};
    pub use crate::options::{Options, bad_option};
    pub use crate::path::{ExpectedPath, Hop, PathReport, Place, Verdict};
    pub use crate::pods::{NewPod, Pod};
    pub use crate::services::{Door, Services};
    pub use crate::stitch::{Connection, PointInfo, Seen, Stitcher, is_uplink_name};
    pub use crate::testkit::BatchBuilder;
    pub use crate::{
        CapturePoint, CniObject, Decoding, Description, Direction, Endpoint, IfaceKind, Inventory,
        Ip, LogicalFlow, ObjectKind, ObservationBatch, OptionType, Plugin, PluginError, Role,
        error,
    };
}
