//! A test plugin that misbehaves on purpose, to prove the host contains it.
//!
//! Option `mode`: "noop" (returns nothing: the boundary benchmark), "count" (one flow per
//! batch whose packet count is the number of rows: proves the batch arrived whole), "flows"
//! (one flow per row with flannel-like evidence and points: the cost of returning flows), "trap"
//! (panics), "loop" (never returns), "alloc" (grows memory without bound), "hold" (holds every
//! observation until the window's end, saying so in its `stitch.held` counter, then panics in
//! `flush`: what a plugin killed at the end of a big window loses).
//! "bad-index", "bad-columns", "bad-confidence", "bad-counts" (one flow per batch whose
//! columns break the batch's rules: a string index past the strings, columns of different
//! lengths, a NaN confidence, evidence counts past the evidence list).
//! Option `after`: behave for this many `process` calls first.

use cniscope_sdk::prelude::*;

#[derive(Default)]
pub struct Misbehave {
    mode: String,
    after: i64,
    calls: i64,
    held: u64,
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
                "noop, count, flows, trap, loop, alloc or hold",
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
            "noop" | "count" | "flows" | "trap" | "loop" | "alloc" | "hold" | "bad-index"
            | "bad-columns" | "bad-confidence" | "bad-counts" => Ok(()),
            other => Err(error(
                "bad-option",
                "mode",
                format!("unknown mode `{other}`"),
            )),
        }
    }

    fn process(&mut self, batch: &ObservationBatch, out: &mut Flows) -> Result<(), PluginError> {
        self.calls += 1;
        let mode = if self.calls <= self.after {
            "count"
        } else {
            self.mode.as_str()
        };
        match mode {
            "trap" => panic!("misbehave: trapping on purpose"),
            "hold" => {
                self.held += batch.point.len() as u64;
                Ok(())
            }
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
            bad if bad.starts_with("bad-") => {
                let ip = Ip::v4(192, 0, 2, 1);
                let flow = FlowBuilder::new(Endpoint::unknown(ip), Endpoint::unknown(ip), 6, 80)
                    .counters(batch.point.len() as u64, 0, 0, 0)
                    .evidence("misbehave:bad")
                    .build();
                out.push(&flow);
                let raw = out.raw_mut();
                match bad {
                    "bad-index" => raw.client_name[0] = 9999,
                    "bad-columns" => raw.packets.push(7),
                    "bad-confidence" => raw.confidence[0] = f32::NAN,
                    _ => raw.evidence_count[0] = 200,
                }
                Ok(())
            }
            "count" => {
                let n = batch.point.len() as u64;
                let ip = Ip::v4(192, 0, 2, 1);
                let flow = FlowBuilder::new(Endpoint::unknown(ip), Endpoint::unknown(ip), 0, 0)
                    .counters(n, 0, 0, 0)
                    .evidence("misbehave:count")
                    .build();
                out.push(&flow);
                Ok(())
            }
            "flows" => {
                // Shaped like flannel's output, emitted without allocating.
                let points = [
                    "node-a/vethclienta1:any",
                    "node-a/eth0:any",
                    "node-b/eth0:any",
                    "node-b/vethserverb1:any",
                ];
                for o in batch_rows(batch) {
                    out.add(&FlowRef {
                        client: EndpointRef {
                            role: Role::Pod,
                            ip: o.src_ip(),
                            name: "",
                        },
                        server: EndpointRef {
                            role: Role::Pod,
                            ip: o.dst_ip(),
                            name: "",
                        },
                        service: None,
                        protocol: o.protocol(),
                        server_port: o.dst_port(),
                        packets: o.packets(),
                        bytes: o.bytes(),
                        first_ns: o.first_ns(),
                        last_ns: o.last_ns(),
                        confidence: 1.0,
                        evidence: &["flannel:vxlan", "service:dnat"],
                        observed_at: &points,
                        continued: false,
                        connection: 0,
                        path: None,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn flush(&mut self, _now_ns: u64, _out: &mut Flows) -> Result<(), PluginError> {
        if self.mode == "hold" && self.held > 0 {
            panic!(
                "misbehave: dying at the window's end with {} held",
                self.held
            );
        }
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![("stitch.held".to_string(), self.held)]
    }
}

cniscope_sdk::export_plugin!(Misbehave);
