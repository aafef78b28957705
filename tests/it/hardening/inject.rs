//! No injection path: every hostile value (newlines and other control characters, spaces,
//! quotes, option-like text, overlong names, non-UTF-8 bytes), given as a flag or as an
//! environment variable, makes meshcap exit 1 naming the flag or variable, print nothing on
//! stdout and apply nothing. The golden cases `golden/inject-*` pin the messages; these tests
//! run the values that the golden layout cannot carry (newlines, non-UTF-8) and prove for
//! every class that the target namespace was not touched.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use super::assert_nothing_applied;
use crate::support::{Meshcap, Netns, Run, SIDECAR, TempDir, Variant, needs_netns};

/// One hostile value: extra arguments, extra environment, and the flag or variable the error
/// must name.
struct Case {
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
    names: &'static str,
}

fn arg(flag: &str, value: &str) -> Case {
    Case {
        args: vec![flag.into(), value.into()],
        env: vec![],
        names: "",
    }
}

fn cases() -> Vec<Case> {
    let named = |mut c: Case, names: &'static str| {
        c.names = names;
        c
    };
    let env = |name: &'static str, value: OsString| Case {
        args: vec![],
        env: vec![(name, value)],
        names: name,
    };
    vec![
        // Newlines and other control characters.
        named(arg("-c", "eth0\n-A OUTPUT -j ACCEPT"), "--istio-exclude-interfaces"),
        named(arg("-b", "80,\n443"), "--istio-inbound-ports"),
        named(arg("-i", "10.0.0.0/8\r"), "--istio-service-cidr"),
        named(arg("-m", "TPROXY\t"), "--istio-inbound-interception-mode"),
        named(arg("-k", "veth0\u{1b}[2J"), "--kube-virt-interfaces"),
        env("ISTIO_EXCLUDE_INTERFACES", "eth0\n-j ACCEPT".into()),
        env("ISTIO_OUTBOUND_OWNER_GROUPS", "*\n".into()),
        env("PROXY_GID", "\n".into()),
        // Spaces and option-like text.
        named(arg("-c", "eth0 -j ACCEPT"), "--istio-exclude-interfaces"),
        named(arg("-x", "10.0.0.0/8 -j ACCEPT"), "--istio-service-exclude-cidr"),
        named(arg("-d", "15090 -j ACCEPT"), "--istio-local-exclude-ports"),
        named(arg("-u", "1337 --uid-owner 0"), "--proxy-uid"),
        named(arg("-c", "-j"), "--istio-exclude-interfaces"),
        env("ISTIO_OUTBOUND_OWNER_GROUPS", "java --gid-owner 0".into()),
        env("KUBE_VIRT_INTERFACES", "veth0 ! -i lo".into()),
        env("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8 -j ACCEPT".into()),
        // Quotes and nft/iptables metacharacters.
        named(arg("-k", "veth0\""), "--kube-virt-interfaces"),
        named(arg("-c", "eth0'"), "--istio-exclude-interfaces"),
        named(arg("-c", "eth*"), "--istio-exclude-interfaces"),
        named(arg("-c", "e;th"), "--istio-exclude-interfaces"),
        named(arg("-t", "1337/0"), "--istio-inbound-tproxy-mark"),
        env("ISTIO_EXCLUDE_INTERFACES", "$iface".into()),
        // Overlong values.
        named(arg("-c", "sixteen-bytes-xx"), "--istio-exclude-interfaces"),
        named(arg("-p", "000000000015001"), "--envoy-port"),
        env(
            "ISTIO_OUTBOUND_OWNER_GROUPS",
            "a23456789012345678901234567890123".into(),
        ),
        // Not UTF-8.
        env("KUBE_VIRT_INTERFACES", OsString::from_vec(b"veth\xff0".to_vec())),
        named(
            Case {
                args: vec!["-c".into(), OsString::from_vec(b"eth\xff0".to_vec())],
                env: vec![],
                names: "",
            },
            "-c",
        ),
        // Log flags.
        named(arg("--log_output_level", "debug\n"), "--log_output_level"),
        named(
            Case {
                args: vec!["--log_as_json=yes; rm".into()],
                env: vec![],
                names: "",
            },
            "--log_as_json",
        ),
    ]
}

/// `meshcap BASE` with the case's arguments and environment.
fn command(base: &[&str], case: &Case) -> Meshcap {
    Meshcap::new()
        .args(base)
        .args(&case.args)
        .envs(case.env.iter().map(|(k, v)| (k, v)))
}

#[track_caller]
fn assert_refused(run: &Run, case: &Case) {
    let what = format!("{:?} {:?} must name {}", case.args, case.env, case.names);
    assert_eq!(run.code, Some(1), "{what}:\n{run}");
    assert_eq!(run.stdout, "", "{what}: nothing on stdout");
    let err = &run.stderr;
    assert!(
        err.starts_with("meshcap: invalid value '") && err.contains(&format!("' for '{}': ", case.names)),
        "{what}: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line, control characters escaped: {err:?}");
}

#[test]
fn hostile_values_are_refused_by_render_and_dry_run() {
    for case in cases() {
        let mut base = vec!["render"];
        base.extend_from_slice(SIDECAR);
        assert_refused(&command(&base, &case).run(), &case);
        let mut base = vec!["istio-iptables"];
        base.extend_from_slice(SIDECAR);
        base.push("--dry-run");
        assert_refused(&command(&base, &case).run(), &case);
    }
}

#[test]
fn hostile_values_apply_nothing() {
    needs_netns!();
    let ns = Netns::ipv4("inject");
    let mut base = vec!["istio-iptables"];
    base.extend_from_slice(SIDECAR);
    for variant in Variant::BOTH {
        for case in cases() {
            let apply = command(&base, &case).netns(&ns).variant(variant);
            assert_refused(&apply.run(), &case);
            assert_nothing_applied(&ns, &format!("{variant:?} {:?} {:?}", case.args, case.env));
        }
    }
}

#[test]
fn a_hostile_resolv_conf_entry_is_skipped_and_named() {
    let dir = TempDir::new("resolv");
    let resolv = dir.write(
        "resolv.conf",
        "nameserver 10.96.0.10\nnameserver 10.0.0.1;-j\nnameserver \"1.1.1.1\"\nnameserver 10.0.0.2\u{1b}[2J\nnameserver fd00::53 -j ACCEPT\n",
    );
    let render = Meshcap::new()
        .args(["render", "-b", "*", "--redirect-dns", "--resolv-conf"])
        .arg(&resolv);
    let run = render.clone().args(["--family", "v4"]).run();
    run.success();
    let rules = &run.stdout;
    assert!(rules.contains("-d 10.96.0.10/32"), "{rules}");
    for bad in ["10.0.0.1", "1.1.1.1", "10.0.0.2", ";", "\""] {
        assert!(!rules.contains(bad), "{bad} must not reach the rules:\n{rules}");
    }
    let err = &run.stderr;
    assert!(err.contains("ignoring un-parsable DNS server '10.0.0.1;-j'"), "{err}");
    assert!(err.contains("'10.0.0.2\\u{1b}[2J'"), "escaped: {err:?}");
    assert!(!err.contains('\u{1b}'), "no raw escape character in the log");
    // The trailing words after an address are ignored (as Istio does), so fd00::53 counts.
    render
        .args(["--family", "v6", "--ipv6"])
        .run()
        .stdout_contains("-d fd00::53/128");
}

#[test]
fn the_env_dump_escapes_values_no_validator_saw() {
    // ENVOY_PORT is echoed in Istio's environment dump but not read (the flag is); a value
    // shadowed by a flag is not validated either. Neither can forge a log line.
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .arg("--dry-run")
        .env("ENVOY_PORT", "1\n2026-01-01T00:00:00.000000Z\terror\tforged")
        .env("ISTIO_INBOUND_PORTS", "x\ny")
        .run()
        .success()
        .stderr_contains("ENVOY_PORT=1\\n2026-01-01")
        .stderr_contains("ISTIO_INBOUND_PORTS=x\\ny")
        .stderr_lacks("\terror\tforged");
}
