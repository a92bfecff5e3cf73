//! A strategy builds with `cargo component build` as well as with
//! `cargo build --target wasm32-wasip2`, and the host runs both.

use std::path::Path;
use std::process::Command;

use polybot_host::sandbox::SandboxLimits;
use polybot_tests::sandbox;

#[tokio::test]
async fn momentum_built_with_cargo_component_runs_in_the_host() {
    let available = Command::new("cargo")
        .args(["component", "--version"])
        .output();
    assert!(
        available.is_ok_and(|o| o.status.success()),
        "cargo-component is not installed; scripts/setup.sh installs it"
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target_dir = workspace.join("target").join("component");
    let status = Command::new("cargo")
        .current_dir(workspace.join("strategies/momentum"))
        .args(["component", "build", "--release", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo component");
    assert!(status.success(), "cargo component build failed");

    let wasm = target_dir.join("wasm32-wasip1/release/momentum.wasm");
    let sandbox = sandbox(SandboxLimits::default());
    let module = sandbox
        .load(&wasm)
        .expect("the cargo-component build is a strategy");
    let mut instance = module.instantiate("component-build").await.unwrap();
    let info = instance.describe().await.unwrap();
    assert_eq!(info.name, "momentum");
    assert_eq!(instance.init("{}").await.unwrap(), Ok(()));
}
