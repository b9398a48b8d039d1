//! A test plugin that asks for filesystem access: the host must refuse to load it.

use cniscope_sdk::prelude::*;

#[derive(Default)]
pub struct FsReader;

impl Plugin for FsReader {
    fn describe() -> Description {
        DescriptionBuilder::new("fs-reader", env!("CARGO_PKG_VERSION"))
            .cni("test")
            .build()
    }

    fn process(&mut self, _batch: &ObservationBatch, _out: &mut Flows) -> Result<(), PluginError> {
        // Reading a file pulls in wasi:filesystem imports.
        let secret = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        Err(error(
            "internal",
            "",
            format!("read {} bytes", secret.len()),
        ))
    }
}

cniscope_sdk::export_plugin!(FsReader);
