//! docs/cli.md is what the command line says: generated from clap's own
//! definition and compared whole. `POD_UPDATE_CLI_DOC=1` rewrites it.

#[test]
fn docs_cli_md_matches_clap() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
    let want = pod::cli_doc::reference();
    if std::env::var_os("POD_UPDATE_CLI_DOC").is_some() {
        std::fs::write(path, &want).expect("write docs/cli.md");
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli.md differs from the command line; run `POD_UPDATE_CLI_DOC=1 cargo test -p pod --test cli_doc` and commit it.\n--- generated ---\n{want}"
    );
}
