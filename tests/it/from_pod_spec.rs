//! `meshcap check --network-namespace NS --from-pod-spec FILE`: a live pod checked with the
//! args and env of its own istio-init container (the reader of `meshcap audit`), in a namespace
//! this test creates.

use crate::support::SIDECAR;
use crate::support::cmd::meshcap_command as meshcap;
use crate::support::netns::{Netns as NetNs, needs_netns};

#[test]
fn check_a_live_namespace_with_the_flags_of_its_pod_spec() {
    needs_netns!();
    let ns = NetNs::new("podspec");
    ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
    let mut apply = vec!["istio-iptables", "--network-namespace", &ns.name];
    apply.extend_from_slice(SIDECAR);
    let o = meshcap(&apply).env("ENABLE_INBOUND_IPV6", "false").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let args: Vec<String> = std::iter::once("istio-iptables")
        .chain(SIDECAR.iter().copied())
        .map(String::from)
        .collect();
    let spec = |env: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
            "spec": {"initContainers": [{"name": "istio-init", "image": "proxyv2", "args": args, "env": env}],
                     "containers": [{"name": "app", "image": "app"}]}})
        .to_string()
    };
    let dir = std::env::temp_dir().join(format!("meshcap-podspec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pod.json");
    let check = |text: String| {
        std::fs::write(&file, text).unwrap();
        let o = meshcap(&[
            "check",
            "--network-namespace",
            &ns.name,
            "--from-pod-spec",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (o.status.code(), s(&o.stdout), s(&o.stderr))
    };
    // The pod's env is the check's env: IPv6 off as applied.
    let (code, out, err) = check(spec(
        serde_json::json!([{"name": "ENABLE_INBOUND_IPV6", "value": "false"}]),
    ));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("# IPv4 (iptables-nft-save): in sync"), "{out}");
    // A different pod-spec value is drift; a value meshcap refuses is the apply's error.
    let (code, out, _) = check(spec(serde_json::json!([
        {"name": "ENABLE_INBOUND_IPV6", "value": "false"},
        {"name": "ISTIO_OUTBOUND_PORTS", "value": "9000"}
    ])));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("+ -t nat -A ISTIO_OUTPUT -p tcp --dport 9000 -j ISTIO_REDIRECT"),
        "{out}"
    );
    let (code, _, err) = check(spec(serde_json::json!([{"name": "PROBE_TIMEOUT", "value": "5"}])));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value '5' for 'PROBE_TIMEOUT'"), "{err}");
    // Capture flags on the command line too: refused, nothing is guessed.
    let o = meshcap(&["check", "--from-pod-spec", file.to_str().unwrap(), "-b", "80"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("for '--from-pod-spec'"));
    let _ = std::fs::remove_dir_all(&dir);
}
