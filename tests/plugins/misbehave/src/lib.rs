//! A test plugin that misbehaves on purpose, to prove the host contains it.
//!
//! Option `mode`: "noop" (returns nothing: the boundary benchmark), "count" (one flow per
//! batch whose packet count is the number of rows: proves the batch arrived whole), "trap"
//! (panics), "loop" (never returns), "alloc" (grows memory without bound).
//! Option `after`: behave for this many `process` calls first.

use cniscope_sdk::prelude::*;

#[derive(Default)]
pub struct Misbehave {
    mode: String,
    after: i64,
    calls: i64,
}

impl Plugin for Misbehave {
    fn describe() -> Description {
        DescriptionBuilder::new("misbehave", env!("CARGO_PKG_VERSION"))
            .cni("test")
            .capture("lo", IfaceKind::Other)
            .option(
                "mode",
                OptionType::String,
                "\"noop\"",
                "noop, count, trap, loop or alloc",
            )
            .option(
                "after",
                OptionType::Integer,
                "0",
                "process calls to behave before misbehaving",
            )
            .build()
    }

    fn configure(&mut self, options: &Options) -> Result<(), PluginError> {
        options.deny_unknown(&["mode", "after"])?;
        self.mode = options.string("mode", "noop")?;
        self.after = options.integer("after", 0)?;
        match self.mode.as_str() {
            "noop" | "count" | "trap" | "loop" | "alloc" => Ok(()),
            other => Err(error(
                "bad-option",
                "mode",
                format!("unknown mode `{other}`"),
            )),
        }
    }

    fn process(&mut self, batch: &ObservationBatch) -> Result<Vec<LogicalFlow>, PluginError> {
        self.calls += 1;
        let mode = if self.calls <= self.after {
            "count"
        } else {
            self.mode.as_str()
        };
        match mode {
            "trap" => panic!("misbehave: trapping on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "count" => {
                let n = batch.point.len() as u64;
                let ip = Ip::v4(192, 0, 2, 1);
                Ok(vec![
                    FlowBuilder::new(Endpoint::unknown(ip), Endpoint::unknown(ip), 0, 0)
                        .counters(n, 0, 0, 0)
                        .evidence("misbehave:count")
                        .build(),
                ])
            }
            _ => Ok(Vec::new()),
        }
    }
}

cniscope_sdk::export_plugin!(Misbehave);
