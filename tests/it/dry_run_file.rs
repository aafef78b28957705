//! `DRY_RUN_FILE_PATH` beyond what the golden cases pin (`golden/dryrun-file-*`): a directory
//! meshcap may not write into is refused before the run (as a user without write access; root
//! writes anywhere), and without a dry run the variable is not read at all (a real apply, in a
//! namespace this test creates).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::apply::{show, text};
use crate::support::{NetNs, SIDECAR, meshcap, netns_available};

/// A fresh directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("meshcap-it-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn entries(&self) -> Vec<String> {
        fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn dry_run_args() -> Vec<&'static str> {
    let mut args = vec!["istio-iptables"];
    args.extend_from_slice(SIDECAR);
    args.push("--dry-run");
    args
}

#[test]
fn an_unwritable_directory_is_refused_before_the_run() {
    let dir = TempDir::new("dryrunfile-ro");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o555)).unwrap();
    let target = dir.0.join("out.file");
    let mut cmd = meshcap(&dry_run_args());
    cmd.env("DRY_RUN_FILE_PATH", &target)
        .env("ENABLE_INBOUND_IPV6", "false");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root writes anywhere: run as `nobody`, for whom the directory is read-only.
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "meshcap: invalid value '{}' for 'DRY_RUN_FILE_PATH': cannot create a file in the directory '{}': Permission denied (os error 13)\n",
            target.display(),
            dir.0.display()
        ),
        "the error comes before any log line"
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn without_a_dry_run_the_variable_is_not_read() {
    if !netns_available() {
        return;
    }
    let dir = TempDir::new("dryrunfile-apply");
    // A value a dry run refuses (it names a directory): a real apply must not even look at it.
    let value = format!("{}/sub/", dir.0.display());
    let refused = meshcap(&dry_run_args())
        .env("DRY_RUN_FILE_PATH", &value)
        .env("ENABLE_INBOUND_IPV6", "false")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        text(&refused.stderr).contains("for 'DRY_RUN_FILE_PATH'"),
        "{}",
        show(&refused)
    );

    let ns = NetNs::new("dryrunfile");
    let mut args = vec!["istio-iptables"];
    args.extend_from_slice(SIDECAR);
    args.extend_from_slice(&["--network-namespace", &ns.name]);
    for value in [value.as_str(), &format!("{}/out.file", dir.0.display())] {
        let out = meshcap(&args)
            .env("DRY_RUN_FILE_PATH", value)
            .env("ENABLE_INBOUND_IPV6", "false")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        // Not read, only named: the value itself appears nowhere.
        let warning = "DRY_RUN_FILE_PATH is set but this is not a dry run: nothing is written to it";
        assert!(text(&out.stderr).contains(warning), "{}", show(&out));
        assert!(!text(&out.stderr).contains(value), "{}", show(&out));
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    let check = meshcap(&["check", "--network-namespace", &ns.name, "--ipv6=false"])
        .args(SIDECAR)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "the rules were applied: {}", show(&check));
}
