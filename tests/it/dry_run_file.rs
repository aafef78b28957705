//! `DRY_RUN_FILE_PATH` beyond what the golden cases pin (`golden/dryrun-file-*`): a directory
//! meshcap may not write into is refused before the run (as a user without write access; root
//! writes anywhere), and without a dry run the variable is not read at all (a real apply, in a
//! namespace this test creates). Hostile targets: a FIFO without a reader is refused
//! at once, a file bind-mounted over the target (a Kubernetes `subPath`, in a private mount
//! namespace) is written in place or refused before the run, a 240-byte name works, and a
//! symbolic link is followed only when owned by root or the caller.

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::{Meshcap, Netns, SIDECAR, TempDir, needs_netns};

/// Long enough for a dry run on a busy machine, far shorter than a hang.
const LIMIT: Duration = Duration::from_secs(20);

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
            .stderr_contains("DRY_RUN_FILE_PATH is set but this is not a dry run: nothing is written to it");
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    Meshcap::new()
        .args(["check", "--ipv6=false"])
        .netns(&ns)
        .args(SIDECAR)
        .run()
        .success();
}

/// The stream of [`dry_run`] written to a plain file, to compare the other targets with.
fn plain_stream() -> String {
    let dir = TempDir::new("dryrunfile-plain");
    let target = dir.join("out.file");
    dry_run()
        .env("DRY_RUN_FILE_PATH", &target)
        .time_limit(LIMIT)
        .run()
        .success();
    let text = fs::read_to_string(&target).unwrap();
    assert!(text.starts_with("iptables-save\n"), "{text}");
    text
}

/// A refusal before the run: exit 1, the one error line, no log line.
fn refused(target: &Path, why: &str) {
    dry_run()
        .env("DRY_RUN_FILE_PATH", target)
        .time_limit(LIMIT)
        .run()
        .expect_exit(1)
        .stdout_is("")
        .stderr_is(&format!(
            "meshcap: invalid value '{}' for 'DRY_RUN_FILE_PATH': {why}\n",
            target.display()
        ));
}

#[test]
fn a_fifo_without_a_reader_is_refused_at_once() {
    let dir = TempDir::new("dryrunfile-fifo");
    let fifo = dir.join("out.file");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // The builder's time limit fails the test if meshcap blocks opening it.
    refused(&fifo, "it is a FIFO; name a regular file");
    let mut names = dir.entries();
    names.sort();
    assert_eq!(names, ["out.file"]);
}

#[test]
fn a_240_byte_name_works() {
    let dir = TempDir::new("dryrunfile-long");
    let name = "s".repeat(240);
    let target = dir.join(&name);
    dry_run()
        .env("DRY_RUN_FILE_PATH", &target)
        .time_limit(LIMIT)
        .run()
        .success();
    assert_eq!(fs::read_to_string(&target).unwrap(), plain_stream());
    assert_eq!(dir.entries(), [name]);
}

/// [`dry_run`] in a private mount namespace where `source` is bind-mounted over `target` (as a
/// Kubernetes `subPath` mounts a single file), read-only if `ro`.
fn with_bind_mount(source: &Path, target: &Path, ro: bool) -> Meshcap {
    let script = "mount --bind \"$1\" \"$2\" || exit 97\n\
                  if [ \"$3\" = ro ]; then mount -o remount,bind,ro \"$2\" || exit 96; fi\n\
                  shift 3\n\
                  exec \"$@\"";
    let mut launcher: Vec<OsString> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ]
    .map(OsString::from)
    .into();
    launcher.extend([
        source.into(),
        target.into(),
        OsString::from(if ro { "ro" } else { "rw" }),
    ]);
    Meshcap::new()
        .launcher(launcher)
        .arg("istio-iptables")
        .args(SIDECAR)
        .arg("--dry-run")
        .env("ENABLE_INBOUND_IPV6", "false")
        .env("DRY_RUN_FILE_PATH", target)
        .time_limit(LIMIT)
}

#[test]
fn a_bind_mounted_target_is_written_in_place() {
    needs_netns!(); // root, as for the namespaces: a mount namespace of its own
    let dir = TempDir::new("dryrunfile-bind");
    fs::create_dir(dir.join("volume")).unwrap();
    let source = dir.write("volume/stream", &"an old, longer file\n".repeat(200));
    let target = dir.write("out.file", "placeholder\n");
    with_bind_mount(&source, &target, false).run().success();
    // The file the mount shows was replaced whole (no stale tail); the mount point under it
    // and the directory hold nothing new.
    assert_eq!(fs::read_to_string(&source).unwrap(), plain_stream());
    assert_eq!(fs::read_to_string(&target).unwrap(), "placeholder\n");
    let mut names = dir.entries();
    names.sort();
    assert_eq!(names, ["out.file", "volume"]);
    assert_eq!(fs::read_dir(dir.join("volume")).unwrap().count(), 1);
}

#[test]
fn a_read_only_bind_mounted_target_is_refused_before_the_run() {
    needs_netns!();
    let dir = TempDir::new("dryrunfile-bindro");
    let source = dir.write("stream", "old\n");
    let target = dir.write("out.file", "placeholder\n");
    with_bind_mount(&source, &target, true)
        .run()
        .expect_exit(1)
        .stdout_is("")
        .stderr_is(&format!(
            "meshcap: invalid value '{}' for 'DRY_RUN_FILE_PATH': cannot open it for writing: Read-only file system (os error 30)\n",
            target.display()
        ));
    assert_eq!(fs::read_to_string(&source).unwrap(), "old\n");
    let mut names = dir.entries();
    names.sort();
    assert_eq!(names, ["out.file", "stream"]);
}

#[test]
fn a_symbolic_link_is_followed_only_when_owned_by_root_or_the_caller() {
    needs_netns!(); // root: giving a link to another user takes it
    let dir = TempDir::new("dryrunfile-link");
    // As in a directory another user owns: their link to a file root owns.
    let victim = dir.write("victim", "root's file\n");
    let link = dir.join("out.file");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    refused(
        &link,
        &format!(
            "refusing to follow the symbolic link '{}' owned by uid 65534 (neither root nor the caller)",
            link.display()
        ),
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's file\n");

    // The same link owned by root (the caller) is followed: the file it names is replaced.
    std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
    dry_run()
        .env("DRY_RUN_FILE_PATH", &link)
        .time_limit(LIMIT)
        .run()
        .success();
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_to_string(&victim).unwrap(), plain_stream());
    let mut names = dir.entries();
    names.sort();
    assert_eq!(names, ["out.file", "victim"]);
}
