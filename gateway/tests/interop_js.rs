//! Interoperability with the official JavaScript `socket.io-client`.
//!
//! Runs the Node test suite in `tests/js` (Node's built-in test runner) against
//! the `gateway` binary and the `conformance` example, which cargo builds for
//! `cargo test`. Installs the suite's locked npm dependencies first (`npm ci`)
//! when `node_modules` is missing or older than `package-lock.json`.
//! `GATEWAY_JS_TEST_PATTERN` narrows the run to the tests whose names match
//! (Node's `--test-name-pattern`). Without Node.js 20 (or without npm, when
//! it has to install), the test is skipped with a note, or fails under
//! `GATEWAY_TESTS_REQUIRE_ALL=1`.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::tools::{first_missing, skip_without, version};

#[test]
fn official_socket_io_client_suite() {
    let js_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js");
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_gateway"));
    let conformance = conformance_binary(&gateway);

    if skip_without(missing_node_20()) {
        return;
    }
    if needs_install(&js_dir) {
        if skip_without(first_missing(&["npm"])) {
            return;
        }
        run(
            Command::new("npm")
                .arg("ci")
                .arg("--no-audit")
                .arg("--no-fund")
                .current_dir(&js_dir),
            "npm ci",
        );
    }

    let mut node = Command::new("node");
    node.arg("--test")
        .arg("--test-concurrency=1")
        .arg("--test-reporter=spec")
        .current_dir(&js_dir)
        .env("GATEWAY_BIN", &gateway)
        .env("CONFORMANCE_BIN", &conformance);
    if let Some(pattern) = std::env::var_os("GATEWAY_JS_TEST_PATTERN") {
        let mut arg = OsString::from("--test-name-pattern=");
        arg.push(pattern);
        node.arg(arg);
    }
    node.args(test_files(&js_dir.join("test")));
    run(&mut node, "node --test (tests/js)");
}

/// True when `node_modules` is missing or older than `package-lock.json`
/// (npm records the installed tree in `node_modules/.package-lock.json`).
fn needs_install(js_dir: &Path) -> bool {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (
        modified(js_dir.join("node_modules").join(".package-lock.json")),
        modified(js_dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed < locked,
        _ => true,
    }
}

/// `target/<profile>/examples/conformance`, beside the gateway binary's directory.
fn conformance_binary(gateway: &Path) -> PathBuf {
    let dir = gateway
        .parent()
        .expect("the gateway binary has a parent directory");
    let path = dir
        .join("examples")
        .join(format!("conformance{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: cargo builds examples for a plain `cargo test`; \
         with a filtered run, build it first: cargo build -p gateway --examples",
        path.display()
    );
    path
}

/// The suite's test files (`*.test.js`), sorted, so the run order is stable.
fn test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.js files in {}", dir.display());
    files
}

/// Why Node.js 20 or newer cannot run here, if it cannot: the suite uses
/// Node's built-in test runner as of Node 20.
fn missing_node_20() -> Option<String> {
    let version = match version("node") {
        Ok(version) => version,
        Err(why) => return Some(format!("Node.js 20 or newer: {why}")),
    };
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    (major < 20).then(|| format!("Node.js 20 or newer, found {}", version.trim()))
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}
