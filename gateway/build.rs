//! Makes the browser build of socket.io-client available to the demo page: when
//! `demo/node_modules` lacks it, runs `npm ci` in `demo/` (set MEETUP_SKIP_DEMO_NPM=1
//! to skip), then tells the crate where the bundle is so it can be embedded.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let demo = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("demo");
    let bundle = demo.join("node_modules/socket.io-client/dist/socket.io.min.js");
    println!("cargo::rustc-check-cfg=cfg(demo_bundle)");
    println!("cargo::rerun-if-changed=demo/package-lock.json");
    println!("cargo::rerun-if-env-changed=MEETUP_SKIP_DEMO_NPM");
    // Also while it is missing (then every build looks again), so that a later
    // `npm ci` is picked up.
    println!("cargo::rerun-if-changed=demo/node_modules/socket.io-client/dist/socket.io.min.js");
    if !bundle.exists()
        && std::env::var_os("MEETUP_SKIP_DEMO_NPM").is_none()
        && demo.join("package-lock.json").exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&demo)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            println!(
                "cargo::warning=npm ci in gateway/demo failed ({status:?}); the demo page will lack socket.io-client"
            );
        }
    }
    if bundle.exists() {
        println!("cargo::rustc-cfg=demo_bundle");
        println!("cargo::rustc-env=DEMO_SOCKET_IO_JS={}", bundle.display());
    } else {
        println!(
            "cargo::warning=socket.io-client bundle not found; the demo page will not work (run npm ci in gateway/demo)"
        );
    }
}
