//! The dashboard's files, built into the library (`../dashboard/`): one
//! page, its script and its style sheet; no framework, nothing fetched
//! from elsewhere. The page holds no data: it asks for an API key and
//! polls `/v1/stats`.

/// `(path, content type, body)` of each file.
pub(super) const FILES: [(&str, &str, &str); 3] = [
    (
        "/dashboard",
        "text/html; charset=utf-8",
        include_str!("../dashboard/index.html"),
    ),
    (
        "/dashboard/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/dashboard.js"),
    ),
    (
        "/dashboard/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/dashboard.css"),
    ),
];

/// The file at `path`: its content type and body.
pub(super) fn file(path: &str) -> Option<(&'static str, &'static str)> {
    let path = if path == "/dashboard/" {
        "/dashboard"
    } else {
        path
    };
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, t, b)| (t, b))
}
