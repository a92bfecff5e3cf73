//! Builds the strategy components the end-to-end tests load (momentum, the
//! `faulty` fixture and its `stuck_describe` example) for `wasm32-wasip2`, with a nested `cargo build` into its
//! own target directory so it never waits on the outer build's lock.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf();
    let target_dir = workspace.join("target").join("guests");
    for watched in ["strategies", "wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "momentum",
            "-p",
            "faulty",
            "--lib",
            "--example",
            "stuck_describe",
            "--example",
            "faulty_next",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host target, not for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("cannot run cargo to build the strategy components");
    if !status.success() {
        panic!(
            "building the strategy components for wasm32-wasip2 failed; \
             is the target installed? `rustup target add wasm32-wasip2`"
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    // Examples land in their own folder; the tests find every guest in one.
    for name in ["stuck_describe", "faulty_next"] {
        let example = out.join("examples").join(format!("{name}.wasm"));
        std::fs::copy(&example, out.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", example.display()));
    }
    println!("cargo:rustc-env=POLYBOT_GUEST_DIR={}", out.display());
}
