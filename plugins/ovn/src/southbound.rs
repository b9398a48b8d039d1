//! OVN's southbound database as `ovn-sbctl --format=json list Port_Binding` and
//! `... list Datapath_Binding` print it: `{"headings": [...], "data": [[...], ...]}`, each
//! cell an OVSDB value (`["uuid", "..."]`, `["set", [...]]`, `["map", [[k, v], ...]]`, or a
//! plain string or number). A Geneve packet carries its logical datapath's tunnel key as the
//! VNI and the ingress and egress logical ports' tunnel keys in its OVN option; these tables
//! say which pod a (datapath key, port key) pair is.

use cniscope_sdk::hash::FastMap;
use cniscope_sdk::json::Value;

/// Pods by their logical ports' tunnel keys.
#[derive(Clone, Debug, Default)]
pub struct PortKeys {
    /// (datapath tunnel key, port tunnel key) -> "namespace/pod".
    by_datapath: FastMap<(u32, u16), String>,
    /// Port tunnel key -> "namespace/pod", for keys used by one pod port only (when the
    /// datapaths' keys are not known).
    by_port: FastMap<u16, Option<String>>,
}

/// One table of an `ovn-sbctl --format=json list` output: rows as (column -> cell).
fn rows<'a>(table: &'a Value, what: &str) -> Result<Vec<FastMap<&'a str, &'a Value>>, String> {
    let headings = table["headings"].as_array().ok_or_else(|| {
        format!("{what}: no \"headings\" list (expected `ovn-sbctl --format=json list {what}`)")
    })?;
    let data = table["data"]
        .as_array()
        .ok_or_else(|| format!("{what}: no \"data\" list"))?;
    let names: Vec<&str> = headings.iter().map(|h| h.as_str().unwrap_or("")).collect();
    Ok(data
        .iter()
        .filter_map(Value::as_array)
        .map(|row| names.iter().copied().zip(row.iter()).collect())
        .collect())
}

/// A uuid cell's uuid.
fn uuid(v: &Value) -> Option<&str> {
    match v.as_array()?.as_slice() {
        [kind, id] if kind == "uuid" => id.as_str(),
        _ => None,
    }
}

/// A map cell's value for `key`.
fn map_get<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    let [kind, pairs] = v.as_array()?.as_slice() else {
        return None;
    };
    if kind != "map" {
        return None;
    }
    pairs
        .as_array()?
        .iter()
        .find_map(|p| match p.as_array()?.as_slice() {
            [k, v] if k == key => v.as_str(),
            _ => None,
        })
}

/// The pod a port binding stands for: ovn-kubernetes names a pod's logical port
/// `<namespace>_<pod>` (namespaces cannot contain `_`) and marks it with
/// `external_ids:pod=true` (older versions set `namespace` only). Router, management,
/// gateway and patch ports are no pod.
fn pod_of(row: &FastMap<&str, &Value>) -> Option<String> {
    let ids = row.get("external_ids").copied().unwrap_or(&Value::Null);
    let kind = row.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let marked = map_get(ids, "pod") == Some("true") || map_get(ids, "namespace").is_some();
    if !kind.is_empty() || !marked {
        return None;
    }
    let port = row.get("logical_port")?.as_str()?;
    let (ns, pod) = port.split_once('_')?;
    (!ns.is_empty() && !pod.is_empty()).then(|| format!("{ns}/{pod}"))
}

impl PortKeys {
    /// Reads a Port_Binding table and, if given, a Datapath_Binding table (each as JSON text
    /// or as the parsed value); errors name the table and what is missing.
    pub fn new(port_bindings: &Value, datapaths: Option<&Value>) -> Result<PortKeys, String> {
        let mut dp_keys: FastMap<&str, u32> = FastMap::default();
        if let Some(d) = datapaths {
            for row in rows(d, "Datapath_Binding")? {
                if let (Some(id), Some(key)) = (
                    row.get("_uuid").and_then(|v| uuid(v)),
                    row.get("tunnel_key").and_then(|v| v.as_u64()),
                ) {
                    dp_keys.insert(id, key as u32);
                }
            }
        }
        let mut keys = PortKeys::default();
        for row in rows(port_bindings, "Port_Binding")? {
            let Some(key) = row.get("tunnel_key").and_then(|v| v.as_u64()) else {
                continue;
            };
            let key = key as u16;
            let pod = pod_of(&row);
            let dp = row
                .get("datapath")
                .and_then(|v| uuid(v))
                .and_then(|id| dp_keys.get(id));
            if let (Some(&dp), Some(pod)) = (dp, &pod) {
                keys.by_datapath.insert((dp, key), pod.clone());
            }
            // Port keys are per datapath: a key on two ports names neither.
            keys.by_port
                .entry(key)
                .and_modify(|p| *p = None)
                .or_insert(pod);
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    /// The pod on logical port `port` of datapath `datapath`.
    pub fn pod(&self, datapath: u32, port: u16) -> Option<&str> {
        if self.by_datapath.is_empty() {
            return self.by_port.get(&port)?.as_deref();
        }
        self.by_datapath.get(&(datapath, port)).map(String::as_str)
    }
}

/// An option holding an `ovn-sbctl --format=json` table: the JSON text, or the value itself.
pub fn table(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(text) => {
            cniscope_sdk::json::from_str(text).map_err(|e| format!("not JSON: {e}"))
        }
        Value::Object(_) => Ok(v.clone()),
        other => Err(format!(
            "expected the JSON text of `ovn-sbctl --format=json list ...`, got {other}"
        )),
    }
}
