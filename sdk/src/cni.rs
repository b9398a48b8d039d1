//! The scaffold every CNI plugin shares. A plugin states its CNI's rules ([`CniRules`]: what
//! it captures, its options once with their defaults, what it learns from the inventory, what
//! an address is in each view and what evidence a view adds) and [`Cni`] does the rest: it
//! refuses unknown options, fills in the declared defaults, owns the [`Stitcher`], hands each
//! stitched connection to the rules, and forwards counters and the state kept across windows.
//!
//! A minimal plugin (a CNI that routes pod addresses unchanged, no tunnel):
//!
//! ```
//! use cniscope_sdk::prelude::*;
//!
//! #[derive(Default)]
//! pub struct Plain {
//!     pods: Option<Cidr>,
//!     index: InventoryIndex,
//! }
//!
//! impl CniRules for Plain {
//!     fn describe() -> DescriptionBuilder {
//!         DescriptionBuilder::new("plain", "0.1.0")
//!             .cni("plain")
//!             .capture("veth*", IfaceKind::PodVeth)
//!             .capture("eth*", IfaceKind::Uplink)
//!             .option("pods", OptionType::String, "\"10.0.0.0/8\"", "the pod network")
//!     }
//!
//!     fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
//!         self.pods = o.cidr("pods")?;
//!         Ok(())
//!     }
//!
//!     fn learn(&mut self, inv: Inventory, stitcher: &mut Stitcher) -> Vec<String> {
//!         let (index, warnings) = InventoryIndex::new(inv);
//!         self.index = index;
//!         stitcher.learn([], &self.index);
//!         warnings
//!     }
//!
//!     fn flow(&self, conn: &Connection, out: &mut Flows) {
//!         let (index, pods) = (&self.index, self.pods);
//!         let class = |ip: Ip| match index.pods_by_ip(ip).next() {
//!             Some(_) => Class::Pod { name: "", note: None },
//!             None if pods.is_some_and(|c| c.contains(ip)) => Class::Unknown,
//!             None => Class::External,
//!         };
//!         if let Some(mut decision) = conn.decide(index, |m, side| class(side.of(m))) {
//!             decision.evidence.push("plain:routed");
//!             // The points it should cross, for the edge's path verdict.
//!             decision.path = Some(decision.usual_path(index, conn, None));
//!             conn.emit(out, decision);
//!         }
//!     }
//! }
//!
//! cniscope_sdk::export_plugin!(Cni<Plain>);
//! ```

use crate::describe::DescriptionBuilder;
use crate::flow::Flows;
use crate::options::Options;
use crate::stitch::{Connection, Stitcher};
use crate::{Decoding, Description, Inventory, ObservationBatch, Plugin, PluginError};

/// What a CNI plugin knows; [`Cni`] turns it into a [`Plugin`].
pub trait CniRules: Default + 'static {
    /// Name, version, CNI kinds, capture points, the CNI's objects, and the plugin's own
    /// options, each with its default (a JSON literal: `"8472"`, `"\"\""`, `"[]"`). The
    /// stitcher's options are added.
    fn describe() -> DescriptionBuilder;

    /// Reads the options. Every declared option is there (the operator's value, else its
    /// declared default) and none other: unknown ones were refused before.
    fn configure(&mut self, options: &Options) -> Result<(), PluginError>;

    /// What the configured plugin needs decoded (its tunnel ports); nothing by default.
    fn decoding(&self) -> Decoding {
        crate::describe::DecodingBuilder::new().build()
    }

    /// Learns the cluster from the inventory, tells the stitcher its NAT sources and
    /// services ([`Stitcher::learn`]), and returns what it could not read (warnings: partial
    /// knowledge still names most things).
    fn learn(&mut self, inventory: Inventory, stitcher: &mut Stitcher) -> Vec<String>;

    /// One stitched connection: its flows into `out` (usually one, by
    /// [`Connection::emit`]).
    fn flow(&self, connection: &Connection, out: &mut Flows);

    /// The stitcher this CNI needs (e.g. one that keeps a Geneve option per view).
    fn stitcher() -> Stitcher {
        Stitcher::default()
    }
}

/// A [`Plugin`] made of a CNI's rules and the SDK's stitcher:
/// `cniscope_sdk::export_plugin!(Cni<MyRules>)`.
pub struct Cni<R: CniRules> {
    pub rules: R,
    pub stitcher: Stitcher,
}

impl<R: CniRules> Default for Cni<R> {
    /// Configured with every default, so that an instance the host never configures (or a
    /// test) behaves as one configured with nothing.
    fn default() -> Self {
        let mut cni = Cni {
            rules: R::default(),
            stitcher: R::stitcher(),
        };
        if let Err(e) = cni.configure(&Options::default()) {
            // A default that does not parse is the plugin author's mistake: say so at once.
            panic!(
                "{}: its declared defaults do not configure it: {e:?}",
                description::<R>().name
            );
        }
        cni
    }
}

fn description<R: CniRules>() -> Description {
    Stitcher::describe_options(R::describe()).build()
}

impl<R: CniRules> Plugin for Cni<R> {
    fn describe() -> Description {
        description::<R>()
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        let declared = description::<R>().options;
        let names: Vec<&str> = declared.iter().map(|o| o.name.as_str()).collect();
        options.deny_unknown(&names)?;
        let options = options.with_defaults(&declared)?;
        self.rules.configure(&options)?;
        self.stitcher.configure(&options)
    }

    fn decoding(&self) -> Decoding {
        self.rules.decoding()
    }

    fn on_inventory(&mut self, inventory: Inventory) -> Result<(), PluginError> {
        let warnings = self.rules.learn(inventory, &mut self.stitcher);
        crate::inventory::warnings_to_result(&warnings)
    }

    fn process(&mut self, batch: &ObservationBatch, out: &mut Flows) -> Result<(), PluginError> {
        let rules = &self.rules;
        self.stitcher
            .add_batch_with(batch, |conn| rules.flow(&conn, out));
        Ok(())
    }

    fn flush(&mut self, now_ns: u64, out: &mut Flows) -> Result<(), PluginError> {
        let rules = &self.rules;
        self.stitcher.window_end_ns = now_ns;
        self.stitcher.drain_with(|conn| rules.flow(&conn, out));
        self.stitcher.window_end_ns = 0;
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.stitcher.counters()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.stitcher.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.stitcher.restore(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::DescriptionBuilder;
    use crate::{IfaceKind, OptionType};

    /// Rules that remember what they were configured with.
    #[derive(Default)]
    struct Seen {
        port: u16,
        network: String,
    }

    impl CniRules for Seen {
        fn describe() -> DescriptionBuilder {
            DescriptionBuilder::new("seen", "0.0.0")
                .capture("eth*", IfaceKind::Uplink)
                .option("port", OptionType::Integer, "8472", "a port")
                .option("network", OptionType::String, "\"10.0.0.0/8\"", "a network")
        }
        fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
            self.port = o.int("port")?;
            self.network = o.string("network", "")?;
            Ok(())
        }
        fn learn(&mut self, _: Inventory, _: &mut Stitcher) -> Vec<String> {
            Vec::new()
        }
        fn flow(&self, _: &Connection, _: &mut Flows) {}
    }

    #[test]
    fn declared_defaults_configure_a_plugin_once_and_the_operator_overrides_them() {
        let fresh = Cni::<Seen>::default();
        assert_eq!(
            (fresh.rules.port, fresh.rules.network.as_str()),
            (8472, "10.0.0.0/8")
        );
        let mut p = Cni::<Seen>::default();
        p.configure(&Options::parse(r#"{"port": 4789, "max_held": 10}"#).unwrap())
            .unwrap();
        assert_eq!(
            (p.rules.port, p.rules.network.as_str()),
            (4789, "10.0.0.0/8")
        );
        assert_eq!(p.stitcher.max_held, 10);
        // The stitcher's options are declared beside the plugin's.
        let names: Vec<String> = Cni::<Seen>::describe()
            .options
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["port", "network", "max_held", "time_join_ms"]);
    }

    #[test]
    fn an_unknown_or_bad_option_is_refused_by_name() {
        let mut p = Cni::<Seen>::default();
        let e = p
            .configure(&Options::parse(r#"{"prot": 1}"#).unwrap())
            .unwrap_err();
        assert_eq!(e.field, "prot");
        assert!(
            e.message.contains("port, network, max_held, time_join_ms"),
            "{}",
            e.message
        );
        let e = p
            .configure(&Options::parse(r#"{"port": 70000}"#).unwrap())
            .unwrap_err();
        assert_eq!(e.field, "port");
    }

    #[derive(Default)]
    struct BadDefault;

    impl CniRules for BadDefault {
        fn describe() -> DescriptionBuilder {
            DescriptionBuilder::new("bad-default", "0.0.0").option(
                "network",
                OptionType::String,
                "10.0.0.0/8",
                "a default written without its quotes",
            )
        }
        fn configure(&mut self, _: &Options) -> Result<(), PluginError> {
            Ok(())
        }
        fn learn(&mut self, _: Inventory, _: &mut Stitcher) -> Vec<String> {
            Vec::new()
        }
        fn flow(&self, _: &Connection, _: &mut Flows) {}
    }

    #[test]
    #[should_panic(expected = "bad-default: its declared defaults do not configure it")]
    fn a_default_that_is_not_json_is_the_authors_mistake_at_once() {
        let _ = Cni::<BadDefault>::default();
    }
}
