//! Embeds the demo page (`js/demo/`) and the JavaScript client's bundle
//! (`js/dist/hummer.js`) into `hummer-server`: writes `pages.rs`, a list of
//! (path, content type, file) that `include_str!`s each file found. A
//! checkout without them (a package built alone) gets a binary that says
//! so on `/` instead of failing to build.

use std::path::Path;

fn main() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../js");
    let files = [
        ("/", "text/html; charset=utf-8", "demo/index.html"),
        ("/demo.js", "text/javascript; charset=utf-8", "demo/demo.js"),
        ("/demo.css", "text/css; charset=utf-8", "demo/demo.css"),
        (
            "/hummer.js",
            "text/javascript; charset=utf-8",
            "dist/hummer.js",
        ),
    ];
    let mut out = String::from("&[\n");
    for (path, content_type, file) in files {
        let full = js.join(file);
        // A path that does not exist would make cargo run this every
        // build: watch the folder instead until the file is there.
        let watched = match full.exists() {
            true => full.clone(),
            false => full.parent().map_or(js.clone(), Path::to_path_buf),
        };
        println!("cargo:rerun-if-changed={}", watched.display());
        if full.is_file() {
            out.push_str(&format!(
                "    ({path:?}, {content_type:?}, include_str!({:?})),\n",
                full.display().to_string()
            ));
        }
    }
    out.push_str("]\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("pages.rs");
    std::fs::write(dest, out).expect("write pages.rs");
}
