//! Proves that the checked-in prost code in `src/wire/generated.rs` is what
//! `proto/` compiles to, with no system `protoc` (protox parses the schema).
//! Run with `HUMMER_UPDATE_PROTO=1` to rewrite the checked-in file.

use std::path::Path;

#[test]
fn generated_code_matches_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let descriptors = protox::compile(["hummer/channel/v1/frame.proto"], [root.join("proto")])
        .expect("proto/ compiles");
    let out = tempfile::tempdir().unwrap();
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .out_dir(out.path())
        .compile_fds(descriptors)
        .expect("prost-build generates code");
    let fresh = std::fs::read_to_string(out.path().join("hummer.channel.v1.rs")).unwrap();
    let checked_in_path = root.join("src/wire/generated.rs");
    if std::env::var_os("HUMMER_UPDATE_PROTO").is_some() {
        std::fs::write(&checked_in_path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "src/wire/generated.rs is stale: run `HUMMER_UPDATE_PROTO=1 cargo test --test wire_schema_current`"
    );
}
