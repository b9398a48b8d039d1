//! The web map's files, compiled into the binary: nothing is fetched from elsewhere at run
//! time. Cytoscape.js is vendored from the npm registry (`vendor/`, with its licence).

const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        include_str!("assets/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "map.js",
        include_str!("assets/map.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "map.css",
        include_str!("assets/map.css"),
        "text/css; charset=utf-8",
    ),
    (
        "cytoscape.min.js",
        include_str!("assets/vendor/cytoscape.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "cytoscape.LICENSE",
        include_str!("assets/vendor/cytoscape.LICENSE"),
        "text/plain; charset=utf-8",
    ),
];

/// A file's body and content type.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, body, kind)| (*body, *kind))
}
