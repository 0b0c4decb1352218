//! Bakes the source's git commit, and whether the tree had changes, into the build, for
//! `provenance.json`: the commit a run was built from, not the one checked out when it ends.
use std::path::Path;
use std::process::Command;

/// `git ARGS`, or `None` with the reason as a build warning (provenance then says `null`).
fn git(args: &[&str]) -> Option<String> {
    match Command::new("git").args(args).output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => {
            println!("cargo:warning=git {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
            None
        }
        Err(e) => {
            println!("cargo:warning=git {}: {e}", args.join(" "));
            None
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Rerun when the commit moves or any source changes (directories are scanned recursively).
    for p in [".git/HEAD", ".git/index", ".git/refs/heads", ".git/packed-refs", "crates", "Cargo.toml", "Cargo.lock"] {
        let path = root.join(p);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let dir = root.to_string_lossy().into_owned();
    let commit = git(&["-C", &dir, "rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = git(&["--no-optional-locks", "-C", &dir, "status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty());
    println!("cargo:rustc-env=EXVIT_GIT_COMMIT={commit}");
    // As a JSON value, written into provenance.json as it is.
    println!("cargo:rustc-env=EXVIT_GIT_DIRTY={}", dirty.map_or("null", |d| if d { "true" } else { "false" }));
}
