//! Facts read from the host's files: the process environment snapshot, `/etc/passwd` and
//! `resolv.conf`. Pure parsers plus thin readers; no NSS, no network, so a static binary works.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::values::Owner;

/// A snapshot of environment variables. Taken once in `main`; tests build their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment. A value that is not UTF-8 is kept with its bad bytes replaced
    /// by U+FFFD, so a variable meshcap reads is refused by its validator (naming it) instead of
    /// being silently treated as unset; variables with non-UTF-8 names cannot be ones meshcap
    /// reads and are dropped.
    ///
    /// With duplicate entries the first one wins, as getenv(3) and Go's `os.Getenv` (Istio)
    /// take it.
    pub fn from_process() -> Env {
        Env::from_pairs(
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))),
        )
    }

    /// An environment from (name, value) pairs; the first of duplicate names wins.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Env {
        let mut vars = BTreeMap::new();
        for (k, v) in pairs {
            vars.entry(k.into()).or_insert_with(|| v.into());
        }
        Env { vars }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Finds `user` in passwd(5) text and returns its numeric UID.
pub(crate) fn uid_of(passwd: &str, user: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        if name != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?;
        // Decimal digits only (`str::parse` would also take a leading `+`).
        if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        uid.parse().ok()
    })
}

/// The proxy UID Istio derives when no UID is given: `ENVOY_USER`'s (default `istio-proxy`)
/// uid in the passwd file at `passwd`, else 1337 (no such file or user). An `ENVOY_USER` that
/// cannot be a user name (not UTF-8, a newline, a NUL) is refused rather than silently ignored.
pub(crate) fn envoy_user_uid(env: &Env, passwd: &str) -> Result<u32> {
    let user = env.get("ENVOY_USER").unwrap_or("istio-proxy");
    if user.contains(['\u{FFFD}', '\n', '\r', '\0']) {
        return Err(Error::invalid(
            "ENVOY_USER",
            user,
            "not a user name (it must be UTF-8 without newlines)",
        ));
    }
    match read_optional(passwd, ACCOUNTS_MAX)? {
        Some(text) => Ok(checked_uid_of(passwd, &text, user)?.unwrap_or(1337)),
        None => Ok(1337),
    }
}

/// [`uid_of`], except that a uid of decimal digits out of range (above [`Owner::MAX_ID`]:
/// `4294967295` is "no id" to the kernel) is an error naming the file and the line, rather than
/// a value some later step reports under a flag that was never given.
fn checked_uid_of(path: &str, passwd: &str, user: &str) -> Result<Option<u32>> {
    for (n, line) in passwd.lines().enumerate() {
        let mut fields = line.split(':');
        if fields.next() != Some(user) {
            continue;
        }
        // A line that is not a usable entry is skipped, as [`uid_of`] skips it.
        let (Some(_password), Some(uid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        return match uid.parse::<u32>().ok().filter(|&u| u <= Owner::MAX_ID) {
            Some(u) => Ok(Some(u)),
            None => Err(Error::Parse {
                path: path.to_string(),
                err: format!(
                    "line {}: the uid {uid} of user '{user}' is out of range (0 to {})",
                    n + 1,
                    Owner::MAX_ID
                )
                .into(),
            }),
        };
    }
    Ok(None)
}

/// Finds `group` in group(5) text and returns its numeric GID.
pub(crate) fn gid_of(group_text: &str, group: &str) -> Option<u32> {
    group_text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != group {
            return None;
        }
        let _password = fields.next()?;
        fields.next()?.parse().ok()
    })
}

/// Looks `user` up in the passwd file at `path`; `None` when the file or the user is missing
/// or the file cannot be read (Istio falls back to 1337 then); an error when the file is not a
/// regular file or is larger than [`ACCOUNTS_MAX`] (a FIFO planted there must not hang a pod).
pub(crate) fn lookup_uid(path: &str, user: &str) -> Result<Option<u32>> {
    Ok(read_optional(path, ACCOUNTS_MAX)?.and_then(|text| uid_of(&text, user)))
}

/// The DNS servers of a resolv.conf (see [`parse_resolv_conf`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ResolvConf {
    /// Servers as addresses, in file order.
    pub(crate) servers: Vec<IpAddr>,
    /// IPv6 servers with a zone (`fe80::1%eth0`), as written: Istio parses them, but no rule
    /// address can carry the zone (docs/istio-compat.md §2.5).
    pub(crate) zoned: Vec<String>,
    /// Entries that are not an address at all.
    pub(crate) skipped: Vec<String>,
}

/// DNS servers of a resolv.conf, as Istio collects them: every `nameserver X` line in order
/// (later fields ignored), parsed as one IP address, an IPv6 address possibly with a zone.
pub(crate) fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut out = ResolvConf::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = fields.next() else { continue };
        let zoned = addr
            .split_once('%')
            .filter(|(ip, zone)| !zone.is_empty() && crate::values::parse_ip(ip).is_ok_and(|ip| ip.is_ipv6()));
        match crate::values::parse_ip(addr) {
            Ok(ip) => out.servers.push(ip),
            Err(_) if zoned.is_some() => out.zoned.push(addr.to_string()),
            Err(_) => out.skipped.push(addr.to_string()),
        }
    }
    out
}

/// The size limit of resolv.conf: glibc reads a few kilobytes of it; 1 MiB is generous.
pub(crate) const RESOLV_CONF_MAX: u64 = 1 << 20;
/// The size limit of /etc/passwd and /etc/group (directory-backed images can hold many
/// thousands of accounts: 16 MiB is ~200,000 lines).
pub(crate) const ACCOUNTS_MAX: u64 = 16 << 20;
/// The size limit of an iptables-save dump given with `--from-save` (64 MiB is ~500,000
/// rules, far above what the rule limit lets meshcap plan).
pub(crate) const DUMP_MAX: u64 = 64 << 20;

/// Reads a dump given on the command line (at most [`DUMP_MAX`] bytes, a regular file).
pub(crate) fn read_file(path: &str) -> Result<String> {
    read_capped(path, DUMP_MAX)
}

/// Reads the regular file at `path`, refusing anything else (a FIFO, a device such as
/// `/dev/zero`, a directory) and any file larger than `max` bytes, naming the file. Never
/// blocks: the file is opened with `O_NONBLOCK` and checked with `fstat` before a byte is read.
pub(crate) fn read_capped(path: &str, max: u64) -> Result<String> {
    read_bounded(path, max).map_err(|err| Error::Read {
        path: path.to_string(),
        err,
    })
}

/// [`read_capped`], with a missing or unreadable file as `None` (the callers' default applies)
/// and only a refused file (not regular, too large, not UTF-8) as an error.
fn read_optional(path: &str, max: u64) -> Result<Option<String>> {
    match read_bounded(path, max) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::InvalidData && !std::path::Path::new(path).is_dir() => {
            Err(Error::Read {
                path: path.to_string(),
                err,
            })
        }
        Err(_) => Ok(None),
    }
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

pub(crate) fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// `/dev/null` (character device 1:3), the usual "empty file", reads as empty.
fn is_dev_null(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3)
}

fn read_bounded(path: &str, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Checked by path first so a device is never even opened, then again on the open file
    // (the path may have been swapped in between).
    let check = |meta: std::fs::Metadata| -> std::io::Result<()> {
        if is_dev_null(&meta) {
            return Ok(());
        }
        if !meta.file_type().is_file() {
            return Err(refused(format!(
                "not a regular file ({}); meshcap reads only regular files",
                kind_of(meta.file_type())
            )));
        }
        if meta.len() > max {
            return Err(refused(format!(
                "the file has {} bytes; the limit is {max}",
                meta.len()
            )));
        }
        Ok(())
    };
    check(std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let null = is_dev_null(&meta);
    check(meta)?;
    if null {
        return Ok(String::new());
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(refused(format!(
            "the file grew past the limit of {max} bytes while read"
        )));
    }
    String::from_utf8(bytes).map_err(|_| refused("the file is not UTF-8 text".to_string()))
}

/// User and group names for `-m owner` matches that name them (iptables resolves names when it
/// loads a rule; the tracer resolves them the same way, from the files' text).
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub(crate) passwd: Option<String>,
    pub(crate) group: Option<String>,
}

/// The account files iptables-restore and nft read when they load a rule naming a user or
/// group: meshcap's own `/etc/passwd` and `/etc/group`. `--network-namespace` changes only the
/// network namespace, never the mount namespace, so these are the files whatever namespace is
/// programmed.
pub(crate) const PASSWD: &str = "/etc/passwd";
pub(crate) const GROUP: &str = "/etc/group";

impl Ids {
    /// Reads `/etc/passwd` and `/etc/group` (bounded, regular files only); a missing file
    /// resolves nothing.
    pub fn from_host() -> Result<Ids> {
        Ids::from_files(PASSWD, GROUP)
    }

    /// Reads the passwd and group files at these paths (bounded, regular files only); a
    /// missing file resolves nothing.
    pub(crate) fn from_files(passwd: &str, group: &str) -> Result<Ids> {
        Ok(Ids {
            passwd: read_optional(passwd, ACCOUNTS_MAX)?,
            group: read_optional(group, ACCOUNTS_MAX)?,
        })
    }

    /// Names from the text of a passwd and a group file, for a caller that has them from
    /// elsewhere (tests naming accounts the host does not have).
    pub fn from_texts(passwd: Option<String>, group: Option<String>) -> Ids {
        Ids { passwd, group }
    }

    /// The numeric id of `owner` (a group with `group`), `None` for a name the file does not
    /// list (or no file).
    pub(crate) fn id_of(&self, owner: &Owner, group: bool) -> Option<u32> {
        match owner {
            Owner::Id(n) => Some(*n),
            Owner::Name(name) => {
                let text = if group { &self.group } else { &self.passwd };
                let text = text.as_deref()?;
                if group { gid_of(text, name) } else { uid_of(text, name) }
            }
        }
    }

    /// The numeric id of an owner (`group`: a group), or why it does not resolve.
    pub(crate) fn resolve(&self, owner: &Owner, group: bool) -> Result<u32, String> {
        let (file, what) = if group { (GROUP, "group") } else { (PASSWD, "user") };
        self.id_of(owner, group)
            .ok_or_else(|| format!("{what} '{owner}' is not in {file}, so iptables could not load this rule"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/home:/bin/false\n";
        assert_eq!(uid_of(text, "istio-proxy"), Some(1337));
        assert_eq!(uid_of(text, "nobody"), None);
        assert_eq!(uid_of("broken", "broken"), None);
        assert_eq!(gid_of("root:x:0:\njava:x:2001:a,b\n", "java"), Some(2001));
        assert_eq!(gid_of("java:x:2001:\n", "jav"), None);
        assert_eq!(uid_of("p:x:+5:0::/:/bin/sh\n", "p"), None);
        assert_eq!(uid_of("p:x: 5:0::/:/bin/sh\n", "p"), None);
        assert_eq!(uid_of("p:x:99999999999:0::/:/bin/sh\n", "p"), None);
    }

    #[test]
    fn resolv_conf_servers() {
        let r = parse_resolv_conf(
            "# c\nnameserver 10.96.0.10 # x\nsearch a\nnameserver ::127.0.0.53\nnameserver 01.2.3.4\nnameserver fe80::1%eth0\nnameserver\nnameserver 10.0.0.1%eth0\nnameserver fe80::2%\n",
        );
        let s: Vec<String> = r.servers.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["10.96.0.10", "::7f00:35"]);
        assert_eq!(r.zoned, ["fe80::1%eth0"]);
        // A zone is IPv6 only and never empty (as Go's netip).
        assert_eq!(r.skipped, ["01.2.3.4", "10.0.0.1%eth0", "fe80::2%"]);
    }

    #[test]
    fn the_first_duplicate_wins_and_envoy_user_is_checked() {
        let env = Env::from_pairs([("A", "1"), ("A", "2")]);
        assert_eq!(env.get("A"), Some("1"));
        for bad in ["a\nb", "x\u{FFFD}", "a\0"] {
            let err = envoy_user_uid(&Env::from_pairs([("ENVOY_USER", bad)]), "/nonexistent").unwrap_err();
            assert!(err.to_string().contains("ENVOY_USER"), "{err}");
        }
        assert_eq!(envoy_user_uid(&Env::default(), "/nonexistent").unwrap(), 1337);
    }

    #[test]
    fn an_envoy_user_uid_out_of_range_names_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("meshcap-uid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/:/bin/sh\nistio-proxy:x:4294967295:1::/:/bin/false\nbig:x:99999999999:1::/:/x\nok:x:4294967294:1::/:/x\n",
        )
        .unwrap();
        let p = passwd.to_str().unwrap();
        let uid = |user: &str| envoy_user_uid(&Env::from_pairs([("ENVOY_USER", user)]), p);
        let e = envoy_user_uid(&Env::default(), p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot parse '{p}': line 2: the uid 4294967295 of user 'istio-proxy' is out of range (0 to 4294967294)"
            )
        );
        assert!(
            uid("big")
                .unwrap_err()
                .to_string()
                .contains("line 3: the uid 99999999999")
        );
        assert_eq!(uid("ok").unwrap(), 4294967294);
        assert_eq!(uid("root").unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_are_bounded_regular_files() {
        let err = read_capped("/dev/zero", 10).unwrap_err().to_string();
        assert!(err.contains("'/dev/zero'") && err.contains("character device"), "{err}");
        let dir = std::env::temp_dir().join(format!("meshcap-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_capped(fifo.to_str().unwrap(), 10).unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        // A refused passwd is an error; a missing one is the default.
        assert!(lookup_uid(fifo.to_str().unwrap(), "x").is_err());
        assert_eq!(lookup_uid("/nonexistent/passwd", "x").unwrap(), None);
        let file = dir.join("f");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read_capped(file.to_str().unwrap(), 10).unwrap(), "0123456789");
        let err = read_capped(file.to_str().unwrap(), 9).unwrap_err().to_string();
        assert!(err.contains("10 bytes; the limit is 9"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
