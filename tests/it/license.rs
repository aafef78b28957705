//! The license: the full Apache-2.0 text in LICENSE and the same SPDX name in Cargo.toml, so the
//! crate metadata and the file a user reads cannot disagree.

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn license_file_and_cargo_metadata_agree() {
    let text = std::fs::read_to_string(format!("{ROOT}/LICENSE")).expect("LICENSE at the repository root");
    assert!(
        text.trim_start().starts_with("Apache License"),
        "LICENSE is not the Apache text"
    );
    assert!(text.contains("Version 2.0, January 2004"));
    assert!(
        text.contains("END OF TERMS AND CONDITIONS"),
        "LICENSE is not the full text"
    );
    let manifest = std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).unwrap();
    assert!(
        manifest.lines().any(|l| l.trim() == r#"license = "Apache-2.0""#),
        "Cargo.toml lacks the license"
    );
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
}
