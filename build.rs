//! Build script: the git revision for `streamroute_build_info`.
//!
//! The variable is not `STREAMROUTE_*`: cargo passes `rustc-env` values to
//! the processes `cargo test` and `cargo run` start, and the configuration
//! reads every `STREAMROUTE_*` variable as a key.
//!
//! `SR_BUILD_REVISION` wins (set it where the source has no .git, e.g. a
//! container build); else `git rev-parse --short=12 HEAD`; else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SR_BUILD_REVISION");
    // A new commit moves HEAD or the branch it points at.
    for path in [".git/HEAD", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            let path = format!(".git/{branch}");
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let revision = std::env::var("SR_BUILD_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SR_BUILD_REVISION={revision}");
}

fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let revision = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !revision.is_empty()).then_some(revision)
}
