//! A pod image's accounts for one command: a private mount namespace in which a test's own
//! passwd and group files are bind-mounted over `/etc/passwd` and `/etc/group`, so iptables,
//! nft and meshcap resolve the test's user and group names. The host's files are never touched:
//! the mounts exist only in the child's namespace (propagation private) and end with it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::files::TempDir;

/// A passwd and a group file listing `users` and `groups` (ids from 3000 up, in order).
pub struct Accounts {
    dir: TempDir,
}

impl Accounts {
    pub fn new(users: &[&str], groups: &[&str]) -> Accounts {
        let dir = TempDir::new("accounts");
        let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
        for (i, u) in users.iter().enumerate() {
            passwd.push_str(&format!("{u}:x:{}:{}::/:/bin/false\n", 3000 + i, 3000 + i));
        }
        let mut group = String::from("root:x:0:\n");
        for (i, g) in groups.iter().enumerate() {
            group.push_str(&format!("{g}:x:{}:\n", 4000 + i));
        }
        dir.write("passwd", &passwd);
        dir.write("group", &group);
        Accounts { dir }
    }

    pub fn passwd(&self) -> std::path::PathBuf {
        self.dir.join("passwd")
    }

    pub fn group(&self) -> std::path::PathBuf {
        self.dir.join("group")
    }

    /// Makes `cmd` see these files as `/etc/passwd` and `/etc/group`.
    pub fn apply_to(&self, cmd: &mut Command) {
        bind_accounts(cmd, &self.passwd(), &self.group());
    }
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
}

/// Between fork and exec: a new mount namespace, everything private, then the two bind mounts.
pub fn bind_accounts(cmd: &mut Command, passwd: &Path, group: &Path) {
    let (passwd, group) = (c_path(passwd), c_path(group));
    let (etc_passwd, etc_group, root) = (
        c_path(Path::new("/etc/passwd")),
        c_path(Path::new("/etc/group")),
        c_path(Path::new("/")),
    );
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: only async-signal-safe syscalls on strings allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (from, to) in [(&passwd, &etc_passwd), (&group, &etc_group)] {
                check(libc::mount(
                    from.as_ptr(),
                    to.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            Ok(())
        });
    }
}
