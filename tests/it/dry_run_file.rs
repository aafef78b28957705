//! `DRY_RUN_FILE_PATH` beyond what the golden cases pin (`golden/dryrun-file-*`): a directory
//! meshcap may not write into is refused before the run (as a user without write access; root
//! writes anywhere), and without a dry run the variable is not read at all (a real apply, in a
//! namespace this test creates).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Meshcap, Netns, SIDECAR, TempDir, needs_netns};

/// `meshcap istio-iptables SIDECAR --dry-run` with IPv6 off.
fn dry_run() -> Meshcap {
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .arg("--dry-run")
        .env("ENABLE_INBOUND_IPV6", "false")
}

#[test]
fn an_unwritable_directory_is_refused_before_the_run() {
    let dir = TempDir::new("dryrunfile-ro");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
    let target = dir.join("out.file");
    let mut run = dry_run().env("DRY_RUN_FILE_PATH", &target);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root writes anywhere: run as `nobody`, for whom the directory is read-only.
        run = run.user(65534, 65534);
    }
    run.run().expect_exit(1).stdout_is("").stderr_is(&format!(
        "meshcap: invalid value '{}' for 'DRY_RUN_FILE_PATH': cannot create a file in the directory '{}': Permission denied (os error 13)\n",
        target.display(),
        dir.path().display()
    ));
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn without_a_dry_run_the_variable_is_not_read() {
    needs_netns!();
    let dir = TempDir::new("dryrunfile-apply");
    // A value a dry run refuses (it names a directory): a real apply must not even look at it.
    let value = format!("{}/sub/", dir.path().display());
    dry_run()
        .env("DRY_RUN_FILE_PATH", &value)
        .run()
        .expect_exit(1)
        .stderr_contains("for 'DRY_RUN_FILE_PATH'");

    let ns = Netns::new("dryrunfile");
    for value in [value.as_str(), &format!("{}/out.file", dir.path().display())] {
        Meshcap::new()
            .arg("istio-iptables")
            .args(SIDECAR)
            .netns(&ns)
            .env("DRY_RUN_FILE_PATH", value)
            .env("ENABLE_INBOUND_IPV6", "false")
            .run()
            .success()
            .stderr_lacks("DRY_RUN_FILE_PATH");
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    Meshcap::new()
        .args(["check", "--ipv6=false"])
        .netns(&ns)
        .args(SIDECAR)
        .run()
        .success();
}
