//! Where a byte offset of a config file is: line and column, and the dotted key in force
//! there, with array indexes (`plugin[1].sha256`), so that problems the TOML parser finds
//! and problems validation finds name a key the same way.

use std::collections::HashMap;

/// 1-based line and column of `offset`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, column)
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

/// The table headers seen so far, and the index of each array of tables.
#[derive(Default)]
struct Tables {
    arrays: HashMap<String, usize>,
}

impl Tables {
    /// `a.b.c` with the current index after every prefix that is an array of tables.
    fn indexed(&self, name: &str) -> String {
        let mut prefix = String::new();
        let mut out = String::new();
        for part in name.split('.').map(str::trim) {
            if !prefix.is_empty() {
                prefix.push('.');
                out.push('.');
            }
            prefix.push_str(part);
            out.push_str(part);
            if let Some(i) = self.arrays.get(&prefix) {
                out.push_str(&format!("[{i}]"));
            }
        }
        out
    }

    /// Reads a header line; returns the table it opens, if it is one.
    fn header(&mut self, line: &str) -> Option<String> {
        if let Some(name) = line.strip_prefix("[[") {
            let name = name.split("]]").next().unwrap_or("").trim().to_string();
            let next = self.arrays.get(&name).map(|i| i + 1).unwrap_or(0);
            self.arrays.insert(name.clone(), next);
            return Some(self.indexed(&name));
        }
        let name = line.strip_prefix('[')?;
        Some(self.indexed(name.split(']').next().unwrap_or("").trim()))
    }
}

/// The dotted key in force at `offset`: the enclosing table (with array indexes) plus the
/// key on that line.
pub fn key_at(text: &str, offset: usize) -> String {
    let offset = floor_char_boundary(text, offset);
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let mut tables = Tables::default();
    let mut table = String::new();
    for line in text[..line_start].lines().map(str::trim) {
        if let Some(t) = tables.header(line) {
            table = t;
        }
    }
    let line_end = text[line_start..]
        .find('\n')
        .map(|i| line_start + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    if let Some(t) = tables.header(line) {
        return t;
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_index_of_their_array_of_tables() {
        let text = "[[plugin]]\nname = \"a\"\n[[plugin]]\nname = \"b\"\n[plugin.options]\nvni = 1\n[[agent.node]]\nname = \"n\"\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("name = \"a\""), "plugin[0].name");
        assert_eq!(at("name = \"b\""), "plugin[1].name");
        assert_eq!(at("vni"), "plugin[1].options.vni");
        assert_eq!(at("name = \"n\""), "agent.node[0].name");
        assert_eq!(line_col(text, text.find("vni").unwrap()), (6, 1));
    }
}
