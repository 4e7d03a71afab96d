//! `export_plugins!` refuses to compile a plugin built with `panic = "abort"`, whose first
//! panic would kill the host.

use std::path::Path;
use std::process::Command;

#[test]
fn a_plugin_built_with_panic_abort_does_not_compile() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace.join("tests/fixtures/abort-build"))
        .args(["check", "--quiet", "--target-dir"])
        .arg(workspace.join("target/abort-build"))
        .env_remove("CARGO_PROFILE_DEV_PANIC")
        .output()
        .expect("running cargo check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the fixture must not compile:\n{stderr}"
    );
    assert!(
        stderr.contains("calllogger plugins must be built with panic = \"unwind\""),
        "it fails for its panic strategy, not something else:\n{stderr}"
    );
}
