//! Tells the harness where the `pod` binary of this build is: the profile
//! folder this package is built into (`target/<profile>`, three levels
//! above OUT_DIR), where cargo puts the binary when it builds the `pod`
//! package (`cargo test --workspace`, `cargo build -p pod`). Another
//! package's binary has no `CARGO_BIN_EXE_*` here.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile = out.ancestors().nth(3).expect("OUT_DIR is target/<profile>/build/<pkg>/out");
    println!("cargo:rustc-env=POD_E2E_BINARY={}", profile.join("pod").display());
    println!("cargo:rerun-if-changed=build.rs");
}
