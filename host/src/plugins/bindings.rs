//! Host-side bindings generated from `wit/plugin.wit`.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
});

pub use self::cniscope::plugin::types as wit;
