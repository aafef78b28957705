//! A file meshcap writes whole or not at all (`DRY_RUN_FILE_PATH`).
//!
//! [`Pending::open`] runs before the work that produces the content, so a path that cannot be
//! written fails first, as a bad value naming its setting. It creates a temporary file beside
//! the target; [`Pending::commit`] fills it once and renames it over the target, so a reader sees
//! the old file or the complete new one, never a part of it, and no byte of a longer old file
//! survives. (Istio rewrites the file in place after every recorded command without truncating
//! it.) A run that fails before the commit leaves the target as it was and removes the
//! temporary file. A target that exists and is not a regular file (`/dev/stdout`, a FIFO) is
//! written directly; a symbolic link is followed (the file it points to is replaced, the link
//! stays).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, quote};
use crate::values::OutFile;

/// An output file opened for one complete write.
#[derive(Debug)]
pub struct Pending {
    /// The path as given (for messages) and the setting that named it.
    shown: String,
    source: String,
    target: PathBuf,
    /// `None` once committed.
    sink: Option<Sink>,
}

#[derive(Debug)]
enum Sink {
    /// A temporary file in the target's directory, renamed over the target on commit.
    Temp { path: PathBuf, file: File },
    /// A device or FIFO, written as it is.
    Direct(File),
}

fn shown(path: &Path) -> String {
    quote(&path.display().to_string())
}

impl Pending {
    /// Checks that `file` (named by the setting `source`) can be written and prepares the write.
    pub fn open(file: &OutFile, source: &str) -> Result<Pending> {
        let invalid = |why: String| Error::invalid(source, file.as_str(), why);
        let given = file.path();
        let target = match fs::symlink_metadata(given) {
            Ok(m) if m.file_type().is_symlink() => fs::canonicalize(given).unwrap_or_else(|_| given.to_path_buf()),
            _ => given.to_path_buf(),
        };
        let pending = |sink| Pending {
            shown: file.as_str().to_string(),
            source: source.to_string(),
            target: target.clone(),
            sink: Some(sink),
        };
        let permissions = match fs::metadata(&target) {
            Ok(m) if m.is_dir() => return Err(invalid("it is a directory; name a file".into())),
            Ok(m) if !m.is_file() => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(|e| invalid(format!("cannot open it for writing: {e}")))?;
                return Ok(pending(Sink::Direct(f)));
            }
            Ok(m) => Some(m.permissions()),
            // (A file as a directory part shows below, as the directory that is not one.)
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => None,
            Err(e) => return Err(invalid(format!("cannot use it: {e}"))),
        };
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(invalid(format!("{} is not a directory", shown(&dir)))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(invalid(format!("the directory {} does not exist", shown(&dir))));
            }
            Err(e) => return Err(invalid(format!("cannot use the directory {}: {e}", shown(&dir)))),
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A name taken by a file an earlier, killed run left (a pid is reused in containers)
        // moves on to the next suffix.
        let mut attempt = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!(".{name}.meshcap-{}-{attempt}.tmp", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => {
                    return Err(invalid(format!(
                        "cannot create a file in the directory {}: {e}",
                        shown(&dir)
                    )));
                }
            }
        };
        if let Some(p) = permissions {
            // The replacement keeps the old file's mode.
            let _ = file.set_permissions(p);
        }
        Ok(pending(Sink::Temp { path, file }))
    }

    /// Writes `bytes` as the whole content and puts the file in place.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let err = |e: std::io::Error, path: &str| Error::Write {
            path: path.to_string(),
            source: self.source.clone(),
            err: e,
        };
        match self.sink.take().expect("committed once") {
            Sink::Direct(mut f) => f.write_all(bytes).map_err(|e| err(e, &self.shown)),
            Sink::Temp { path, mut file } => {
                let result = file
                    .write_all(bytes)
                    .and_then(|()| file.flush())
                    .map_err(|e| err(e, &path.display().to_string()))
                    .and_then(|()| fs::rename(&path, &self.target).map_err(|e| err(e, &self.shown)));
                if result.is_err() {
                    let _ = fs::remove_file(&path);
                }
                result
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(Sink::Temp { path, .. }) = &self.sink {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshcap-outfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn out(path: &Path) -> OutFile {
        OutFile::parse(path.to_str().unwrap()).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_longer_old_file_is_replaced_whole_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("replace");
        let target = dir.join("stream");
        fs::write(&target, "old content that is much longer than the new one\n".repeat(10)).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let p = Pending::open(&out(&target), "DRY_RUN_FILE_PATH").unwrap();
        // Until the commit the old file is intact and the temporary file is beside it.
        assert!(fs::read_to_string(&target).unwrap().starts_with("old content"));
        assert_eq!(entries(&dir).len(), 2);
        p.commit(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new\n");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(entries(&dir), ["stream"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_abandoned_write_leaves_the_target_alone() {
        let dir = scratch("abandon");
        let target = dir.join("stream");
        fs::write(&target, "old\n").unwrap();
        drop(Pending::open(&out(&target), "DRY_RUN_FILE_PATH").unwrap());
        assert_eq!(fs::read_to_string(&target).unwrap(), "old\n");
        assert_eq!(entries(&dir), ["stream"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_is_followed() {
        let dir = scratch("link");
        fs::write(dir.join("real"), "old old old\n").unwrap();
        std::os::unix::fs::symlink("real", dir.join("link")).unwrap();
        Pending::open(&out(&dir.join("link")), "X")
            .unwrap()
            .commit(b"n\n")
            .unwrap();
        assert!(fs::symlink_metadata(dir.join("link")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(dir.join("real")).unwrap(), "n\n");
        assert_eq!(entries(&dir), ["link", "real"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_device_is_written_directly() {
        Pending::open(&OutFile::parse("/dev/null").unwrap(), "X")
            .unwrap()
            .commit(b"x\n")
            .unwrap();
    }

    #[test]
    fn unusable_paths_are_invalid_values() {
        let dir = scratch("bad");
        let e = |p: &Path| Pending::open(&out(p), "DRY_RUN_FILE_PATH").unwrap_err().to_string();
        let missing = dir.join("missing").join("stream");
        assert_eq!(
            e(&missing),
            format!(
                "invalid value '{}' for 'DRY_RUN_FILE_PATH': the directory '{}' does not exist",
                missing.display(),
                dir.join("missing").display()
            )
        );
        assert!(e(&dir).ends_with("it is a directory; name a file"), "{}", e(&dir));
        fs::write(dir.join("file"), "").unwrap();
        assert!(e(&dir.join("file").join("x")).ends_with("is not a directory"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
