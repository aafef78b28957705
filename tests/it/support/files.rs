//! Scratch files: [`TempDir`], a unique directory removed on drop, which also holds the
//! stand-in programs error-path tests put first on `PATH` (shell scripts, or links to the real
//! programs); and [`real`], a program's path on this machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp directory (`meshcap-TAG-PID-N`), removed with its
/// content on drop, also when the test fails.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "meshcap-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `DIR/name` (nothing is created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `DIR/name` and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Writes an executable `sh` script `DIR/name` with `body`.
    pub fn script(&self, name: &str, body: &str) -> &TempDir {
        let path = self.write(name, &format!("#!/bin/sh\n{body}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Links `DIR/name` to the real program `target`.
    pub fn link(&self, name: &str, target: &str) -> &TempDir {
        std::os::unix::fs::symlink(real(target), self.join(name)).unwrap();
        self
    }

    /// The names in the directory.
    pub fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A `PATH` value: this directory, then the test process's `PATH`.
    pub fn path_first(&self) -> String {
        format!("{}:{}", self.path.display(), std::env::var("PATH").unwrap_or_default())
    }

    /// A `PATH` value holding only this directory.
    pub fn path_only(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test may have made it read-only.
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The program `name` as found in the test process's `PATH` (or the sbin directories); panics
/// when it is not installed.
pub fn real(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| panic!("{name} is not installed"))
}

/// The program `name` as found in the test process's `PATH` (or the sbin directories).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
