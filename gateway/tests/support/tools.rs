//! The programs some tests run besides the gateway (`redis-server` and
//! `redis-cli`, Node.js and npm), and what a test does when one is missing:
//! with `GATEWAY_TESTS_REQUIRE_ALL=1` (as CI sets it) it fails, saying what
//! is missing; otherwise it prints a note and is skipped, so that a machine
//! without them still runs everything else.

use std::io::Write;
use std::process::Command;

/// Set to `1` to make a missing program fail the tests that need it.
pub const REQUIRE_ALL: &str = "GATEWAY_TESTS_REQUIRE_ALL";

/// True when the calling test must return at once because `missing` (what
/// it needs and did not find) is not `None`; fails the test instead under
/// [`REQUIRE_ALL`].
pub fn skip_without(missing: Option<String>) -> bool {
    let Some(missing) = missing else {
        return false;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{test} needs {missing} ({REQUIRE_ALL}=1 makes that an error)");
    }
    note(&format!(
        "skipped {test}: it needs {missing} (set {REQUIRE_ALL}=1 to fail instead)"
    ));
    true
}

/// Prints `text` as a note that shows in a passing run too: written to
/// stderr itself, past the test harness's capture of `eprintln!`.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "note: {text}");
}

/// What `<tool> --version` prints, or why it could not run.
pub fn version(tool: &str) -> Result<String, String> {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!("`{tool} --version` failed with {}", out.status)),
        Err(e) => Err(format!(
            "cannot run `{tool}` ({e}); install it and put it on PATH"
        )),
    }
}

/// The first of `tools` that does not run, and why.
pub fn first_missing(tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find_map(|tool| version(tool).err().map(|why| format!("{tool}: {why}")))
}

/// [`skip_without`] for tests that start their own Redis servers.
pub fn skip_without_redis() -> bool {
    skip_without(first_missing(&["redis-server", "redis-cli"]))
}
