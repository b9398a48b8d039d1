//! The operator's options for a plugin (the `[plugins.<name>.options]` TOML table, passed as
//! JSON). Every error names the option, so the operator knows which line to fix.

use crate::net::Cidr;
use crate::{PluginError, error};
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default)]
pub struct Options {
    map: Map<String, Value>,
}

/// A `bad-option` error naming the option `field`: what every option check returns, the
/// SDK's and a plugin's own.
pub fn bad_option(field: &str, message: impl Into<String>) -> PluginError {
    error("bad-option", field, message)
}

impl Options {
    /// Parses the JSON object the host sends; "" means no options.
    pub fn parse(json: &str) -> Result<Options, PluginError> {
        if json.trim().is_empty() {
            return Ok(Options::default());
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => Ok(Options { map }),
            Ok(_) => Err(bad_option("", "options must be a table")),
            Err(e) => Err(bad_option("", format!("options are not valid JSON: {e}"))),
        }
    }

    /// Fails on the first option not in `known`, naming it and listing the known ones.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), PluginError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) if known.is_empty() => Err(bad_option(
                k,
                format!("unknown option `{k}`: this plugin takes no options"),
            )),
            Some(k) => Err(bad_option(
                k,
                format!(
                    "unknown option `{k}`, expected one of: {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// These options with every declared option that is missing set to its declared default
    /// (a JSON literal; "" declares a required option, left missing). A default that is not
    /// JSON is the plugin's mistake, named.
    pub fn with_defaults(&self, declared: &[crate::OptionSpec]) -> Result<Options, PluginError> {
        let mut map = self.map.clone();
        for spec in declared {
            if map.contains_key(&spec.name) || spec.default.is_empty() {
                continue;
            }
            let value = serde_json::from_str(&spec.default).map_err(|e| {
                bad_option(
                    &spec.name,
                    format!(
                        "the plugin declares the default {:?}, which is not JSON: {e}",
                        spec.default
                    ),
                )
            })?;
            map.insert(spec.name.clone(), value);
        }
        Ok(Options { map })
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, PluginError> {
        match self.map.get(name) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(bad_option(
                name,
                format!("option `{name}` must be a string, got {v}"),
            )),
        }
    }

    pub fn integer(&self, name: &str, default: i64) -> Result<i64, PluginError> {
        match self.map.get(name) {
            None => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| {
                bad_option(name, format!("option `{name}` must be an integer, got {v}"))
            }),
        }
    }

    /// An integer option that must fit `T` (a port, a VNI).
    pub fn integer_in<T: TryFrom<i64>>(&self, name: &str, default: T) -> Result<T, PluginError> {
        if !self.has(name) {
            return Ok(default);
        }
        self.int(name)
    }

    /// An integer option that must be there and fit `T`: with [`crate::cni::Cni`] every
    /// declared option is (its default filled in), so the default is written once, in the
    /// description.
    pub fn int<T: TryFrom<i64>>(&self, name: &str) -> Result<T, PluginError> {
        let v = match self.map.get(name) {
            None => return Err(bad_option(name, format!("option `{name}` is required"))),
            Some(_) => self.integer(name, 0)?,
        };
        T::try_from(v)
            .map_err(|_| bad_option(name, format!("option `{name}` is out of range: {v}")))
    }

    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, PluginError> {
        match self.map.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(bad_option(
                name,
                format!("option `{name}` must be true or false, got {v}"),
            )),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, PluginError> {
        match self.map.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| {
                        bad_option(
                            name,
                            format!("option `{name}` must be a list of strings, got {i}"),
                        )
                    })
                })
                .collect(),
            Some(v) => Err(bad_option(
                name,
                format!("option `{name}` must be a list of strings, got {v}"),
            )),
        }
    }

    /// A CIDR option given as a string; None when absent or "".
    pub fn cidr(&self, name: &str) -> Result<Option<Cidr>, PluginError> {
        let text = self.string(name, "")?;
        if text.is_empty() {
            return Ok(None);
        }
        let cidr = text
            .parse()
            .map_err(|e: String| bad_option(name, format!("option `{name}`: {text:?}: {e}")))?;
        Ok(Some(cidr))
    }

    /// A list of CIDRs (`["10.0.0.0/16", ...]`); each entry may carry a value after `=`
    /// (`"10.0.0.0/26=node-a"`), returned beside it ("" when none).
    pub fn cidr_list(&self, name: &str) -> Result<Vec<(Cidr, String)>, PluginError> {
        self.strings(name)?
            .iter()
            .map(|entry| {
                let (cidr, value) = entry.split_once('=').unwrap_or((entry, ""));
                let cidr = cidr.trim().parse().map_err(|e: String| {
                    bad_option(name, format!("option `{name}`: {entry:?}: {e}"))
                })?;
                Ok((cidr, value.trim().to_string()))
            })
            .collect()
    }

    /// The raw JSON value, for structured options (e.g. a Port_Binding export).
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_option() {
        let o = Options::parse(r#"{"vni": "one", "port": 70000}"#).unwrap();
        assert_eq!(o.integer("vni", 1).unwrap_err().field, "vni");
        assert_eq!(o.integer_in::<u16>("port", 8472).unwrap_err().field, "port");
        let e = o.deny_unknown(&["vni"]).unwrap_err();
        assert_eq!(e.field, "port");
        assert!(e.message.contains("expected one of: vni"));
        assert_eq!(Options::parse("").unwrap().integer("vni", 1).unwrap(), 1);
        assert!(Options::parse("[1]").is_err());
    }
}
