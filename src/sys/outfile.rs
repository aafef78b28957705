//! A file meshcap writes whole or not at all (`DRY_RUN_FILE_PATH`).
//!
//! [`Pending::open`] runs before the work that produces the content, so a path that cannot be
//! written fails first, as a bad value naming its setting, and nothing is written. It creates a
//! temporary file beside the target; [`Pending::commit`] fills it once and renames it over the
//! target, so a reader sees the old file or the complete new one, never a part of it, and no
//! byte of a longer old file survives. (Istio rewrites the file in place after every recorded
//! command without truncating it.) A run that fails before the commit leaves the target as it
//! was and removes the temporary file. Up front, without ever opening anything but a regular
//! file (so nothing can block):
//!
//! - An existing target that is not a regular file (a FIFO with no reader would block the
//!   open forever, a device, a socket) is refused; so is a directory.
//! - A symbolic link at the target is followed only when it is owned by root or by the caller,
//!   as `fs.protected_symlinks` would: a link planted by another user in a directory they own
//!   must not make root replace the file it points to. Each link of a chain is checked; its
//!   owner and text are read from one `O_PATH` descriptor, so it cannot be swapped in between.
//!   (Links in the directory part are the kernel's to follow.)
//! - A target that is itself a mount point (a Kubernetes `subPath` mount binds a single file)
//!   cannot be renamed over (`EBUSY`). It is recognised with `statx`: the kernel's
//!   `STATX_ATTR_MOUNT_ROOT` where it reports it (Linux 5.8+), else a mount id (or, before
//!   `STATX_MNT_ID`, a device) differing from its directory's. Such a file is opened for
//!   writing at once (a refusal shows before the run) and at the commit overwritten in place
//!   and truncated to the new length: the one case where a reader may see a part of the stream.
//!
//! The temporary name is short (`.meshcap-PID-N.tmp`, not derived from the target's), so a
//! target whose name is near `NAME_MAX` (255 bytes) works.

use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, quote};
use crate::sys::host::kind_of;
use crate::values::OutFile;

/// Links followed at most before a chain is refused (the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// An output file opened for one complete write.
#[derive(Debug)]
pub(crate) struct Pending {
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
    /// A regular file that is a mount point, overwritten in place on commit.
    InPlace(File),
}

fn shown(path: &Path) -> String {
    quote(&path.display().to_string())
}

impl Pending {
    /// Checks that `file` (named by the setting `source`) can be written and prepares the write.
    pub(crate) fn open(file: &OutFile, source: &str) -> Result<Pending> {
        let invalid = |why: String| Error::invalid(source, file.as_str(), why);
        let given = file.path();
        // What the path names once the kernel follows every link (`stat` opens nothing, so a
        // FIFO cannot block it; it also sees through /proc's magic links such as /dev/stdout).
        match fs::metadata(given) {
            Ok(m) if m.is_dir() => return Err(invalid("it is a directory; name a file".into())),
            Ok(m) if !m.is_file() => {
                return Err(invalid(format!(
                    "it is {}; name a regular file",
                    kind_of(m.file_type())
                )));
            }
            _ => {}
        }
        let (target, found) = resolve(given).map_err(invalid)?;
        let pending = |sink| Pending {
            shown: file.as_str().to_string(),
            source: source.to_string(),
            target: target.clone(),
            sink: Some(sink),
        };
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let permissions = match found {
            Some(m) if m.is_dir() => return Err(invalid("it is a directory; name a file".into())),
            Some(m) if !m.is_file() => {
                return Err(invalid(format!(
                    "it is {}; name a regular file",
                    kind_of(m.file_type())
                )));
            }
            Some(m) => {
                if is_mount_point(&target, &dir, &m) {
                    return open_in_place(&target)
                        .map(|f| pending(Sink::InPlace(f)))
                        .map_err(invalid);
                }
                Some(m.permissions())
            }
            None => None,
        };
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(invalid(format!("{} is not a directory", shown(&dir)))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(invalid(format!("the directory {} does not exist", shown(&dir))));
            }
            Err(e) => return Err(invalid(format!("cannot use the directory {}: {e}", shown(&dir)))),
        }
        // A name taken by a file an earlier, killed run left (a pid is reused in containers)
        // moves on to the next suffix.
        let mut attempt = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!(".meshcap-{}-{attempt}.tmp", std::process::id()));
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
    pub(crate) fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let err = |e: std::io::Error, path: &str| Error::Write {
            path: path.to_string(),
            source: self.source.clone(),
            err: e,
        };
        match self.sink.take().expect("committed once") {
            Sink::InPlace(mut f) => f
                .write_all(bytes)
                .and_then(|()| f.set_len(bytes.len() as u64))
                .and_then(|()| f.flush())
                .map_err(|e| err(e, &self.shown)),
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

/// Follows the symbolic links at `given` (the last component, link after link), refusing one
/// owned by neither root nor the caller. Returns the path reached and its `lstat`, `None` when
/// nothing is there (the file is to be created).
fn resolve(given: &Path) -> std::result::Result<(PathBuf, Option<Metadata>), String> {
    // SAFETY: geteuid has no preconditions.
    let caller = unsafe { libc::geteuid() };
    let mut path = given.to_path_buf();
    for _ in 0..=MAX_LINKS {
        let link = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok((path, None)),
            Err(e) => return Err(format!("cannot use {}: {e}", shown(&path))),
        };
        let meta = link
            .metadata()
            .map_err(|e| format!("cannot use {}: {e}", shown(&path)))?;
        if !meta.file_type().is_symlink() {
            return Ok((path, Some(meta)));
        }
        if meta.uid() != 0 && meta.uid() != caller {
            return Err(format!(
                "refusing to follow the symbolic link {} owned by uid {} (neither root nor the caller)",
                shown(&path),
                meta.uid()
            ));
        }
        let text = read_link_fd(&link).map_err(|e| format!("cannot read the symbolic link {}: {e}", shown(&path)))?;
        path = match path.parent() {
            Some(base) => base.join(text),
            None => text,
        };
    }
    Err(format!("too many levels of symbolic links at {}", shown(given)))
}

/// The text of the symbolic link `link` (an `O_PATH | O_NOFOLLOW` descriptor of it).
fn read_link_fd(link: &File) -> std::io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the descriptor is open, the empty path names it (Linux 2.6.39+) and buf is
    // writable for its length.
    let n = unsafe { libc::readlinkat(link.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Whether the regular file `target` (with `lstat` `meta`) is the root of a mount, as a file
/// bind mount is: see the module documentation.
fn is_mount_point(target: &Path, dir: &Path, meta: &Metadata) -> bool {
    let (Some(file), Some(parent)) = (statx(target), statx(dir)) else {
        return fs::metadata(dir).is_ok_and(|d| d.dev() != meta.dev());
    };
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if file.stx_attributes_mask & root != 0 {
        return file.stx_attributes & root != 0;
    }
    let id = libc::STATX_MNT_ID;
    if file.stx_mask & id != 0 && parent.stx_mask & id != 0 {
        return file.stx_mnt_id != parent.stx_mnt_id;
    }
    (file.stx_dev_major, file.stx_dev_minor) != (parent.stx_dev_major, parent.stx_dev_minor)
}

fn statx(path: &Path) -> Option<libc::statx> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and buf a writable statx.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            &mut buf,
        )
    };
    (rc == 0).then_some(buf)
}

/// Opens the regular file `target` for writing without truncating it yet; non-blocking and
/// not following a link, and checked again once open (it may have been swapped).
fn open_in_place(target: &Path) -> std::result::Result<File, String> {
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(target)
        .map_err(|e| format!("cannot open it for writing: {e}"))?;
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(f),
        Ok(m) => Err(format!("it is {}; name a regular file", kind_of(m.file_type()))),
        Err(e) => Err(format!("cannot use it: {e}")),
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
    fn a_fifo_or_a_device_is_refused_without_opening_it() {
        let dir = scratch("fifo");
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No reader: an open for writing would block forever (or fail with ENXIO if
        // non-blocking); the refusal comes from the file type alone.
        let e = Pending::open(&out(&fifo), "DRY_RUN_FILE_PATH").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "invalid value '{}' for 'DRY_RUN_FILE_PATH': it is a FIFO; name a regular file",
                fifo.display()
            )
        );
        // Through a link too (the caller's own, so followed).
        std::os::unix::fs::symlink("fifo", dir.join("link")).unwrap();
        assert!(
            Pending::open(&out(&dir.join("link")), "X")
                .unwrap_err()
                .to_string()
                .ends_with("it is a FIFO; name a regular file")
        );
        let e = Pending::open(&OutFile::parse("/dev/null").unwrap(), "X")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("it is a character device; name a regular file"), "{e}");
        assert_eq!(entries(&dir), ["fifo", "link"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_near_name_max_works() {
        let dir = scratch("long");
        let name = "n".repeat(240);
        let target = dir.join(&name);
        let p = Pending::open(&out(&target), "X").unwrap();
        // The temporary name does not grow with the target's.
        assert!(
            entries(&dir).iter().all(|n| n.len() <= name.len()),
            "{:?}",
            entries(&dir)
        );
        p.commit(b"x\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "x\n");
        assert_eq!(entries(&dir), [name]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_chain_of_links_is_followed_to_its_end() {
        let dir = scratch("chain");
        fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink("sub/second", dir.join("first")).unwrap();
        // Relative to the link's own directory.
        std::os::unix::fs::symlink("real", dir.join("sub/second")).unwrap();
        Pending::open(&out(&dir.join("first")), "X")
            .unwrap()
            .commit(b"c\n")
            .unwrap();
        assert_eq!(fs::read_to_string(dir.join("sub/real")).unwrap(), "c\n");
        assert!(
            fs::symlink_metadata(dir.join("first"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A loop is refused, not followed forever.
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        let e = Pending::open(&out(&dir.join("loop")), "X").unwrap_err().to_string();
        assert!(e.contains("too many levels of symbolic links"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_owned_by_another_user_is_not_followed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // Giving a link away takes root (the integration test covers it as root too).
        }
        let dir = scratch("foreign");
        fs::write(dir.join("real"), "keep\n").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let e = Pending::open(&out(&link), "DRY_RUN_FILE_PATH").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "invalid value '{0}' for 'DRY_RUN_FILE_PATH': refusing to follow the symbolic link '{0}' owned by uid 65534 (neither root nor the caller)",
                link.display()
            )
        );
        assert_eq!(fs::read_to_string(dir.join("real")).unwrap(), "keep\n");
        assert_eq!(entries(&dir), ["link", "real"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plain_file_is_not_a_mount_point() {
        let dir = scratch("mount");
        fs::write(dir.join("f"), "").unwrap();
        let meta = fs::symlink_metadata(dir.join("f")).unwrap();
        assert!(!is_mount_point(&dir.join("f"), &dir, &meta));
        fs::remove_dir_all(&dir).unwrap();
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
