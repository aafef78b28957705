//! `meshcap audit` on hand-written `kubectl -o json` / `-o yaml` shaped fixtures
//! (tests/fixtures/audit, from the Kubernetes API types, Istio's injected init containers
//! included): per container OK or meshcap's exact error, JSON, stdin, exit codes.

use crate::support::cmd::meshcap_command as meshcap;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audit");

fn audit(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let mut cmd = meshcap(&all);
    if let Some(path) = stdin {
        cmd.stdin(std::fs::File::open(path).unwrap());
    }
    let o = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code().unwrap_or(-1), text(&o.stdout), text(&o.stderr))
}

#[test]
fn a_pod_list_reports_each_istio_container() {
    let (code, out, err) = audit(&[&format!("{DIR}/pods.json")], None);
    assert_eq!((code, err.as_str()), (1, ""), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["WORKLOAD", "CONTAINER", "RESULT"]
    );
    assert!(
        lines[1].starts_with("Pod/shop/web-7d9f8b6c5-x2k4p") && lines[1].ends_with("istio-init        OK"),
        "{out}"
    );
    assert!(
        lines[2].ends_with(
            "FAIL meshcap: invalid value 'tproxy' for '--istio-inbound-interception-mode': expected REDIRECT or TPROXY (exact, upper case)"
        ),
        "{out}"
    );
    assert!(
        lines[3].starts_with("Pod/pay/ledger-0") && lines[3].contains("istio-validation  OK"),
        "{out}"
    );
    assert!(
        lines[4].ends_with("FAIL meshcap: unexpected argument '--bogus-flag' found"),
        "{out}"
    );
    assert_eq!(lines[5], "# 5 workload(s), 4 istio container(s), 2 would fail");
    assert!(!out.contains("coredns"), "a pod without a sidecar has no row: {out}");
}

#[test]
fn workloads_in_yaml_from_stdin_and_as_json() {
    let path = format!("{DIR}/workloads.yaml");
    let (code, out, _) = audit(&["-"], Some(&path));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid value 'yes' for 'ISTIO_META_DNS_CAPTURE': expected a boolean (true or false)"),
        "{out}"
    );
    assert!(out.contains("invalid value '5' for 'PROBE_TIMEOUT'"), "{out}");
    assert!(
        out.contains("note: ISTIO_META_DNS_CAPTURE is set with valueFrom: not evaluated"),
        "{out}"
    );

    let (code, out, _) = audit(&[&path, "--format", "json"], None);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["version"].as_u64(), v["workloads"].as_u64(), v["failures"].as_u64()),
        (Some(1), Some(4), Some(2))
    );
    let f = &v["findings"];
    assert_eq!(f[0]["kind"], "Deployment");
    assert_eq!(f[0]["namespace"], "bookinfo");
    assert_eq!(f[1]["container"], "istio-validation");
    assert_eq!(f[2]["name"], "agent");
    assert!(f[2]["error"].is_null(), "{v}");
    assert_eq!(f[3]["kind"], "Job");
    assert_eq!(
        f[3]["notes"][0],
        "ISTIO_META_DNS_CAPTURE is set with valueFrom: not evaluated"
    );
}

#[test]
fn all_ok_exits_0_and_bad_input_exits_2() {
    let dir = std::env::temp_dir().join(format!("meshcap-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = dir.join("ok.json");
    let pods: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/pods.json")).unwrap()).unwrap();
    std::fs::write(&ok, serde_json::to_string(&pods["items"][0]).unwrap()).unwrap();
    let (code, out, _) = audit(&[ok.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("# 1 workload(s), 1 istio container(s), 0 would fail\n"),
        "{out}"
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "kind: [\n").unwrap();
    let (code, out, err) = audit(&[bad.to_str().unwrap()], None);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.starts_with("meshcap: cannot read '") && err.contains("as Kubernetes JSON or YAML"),
        "{err}"
    );
    let (code, _, err) = audit(&["/nonexistent/pods.json"], None);
    assert_eq!(code, 2, "{err}");
    let none = dir.join("none.json");
    std::fs::write(&none, r#"{"kind": "Service", "metadata": {"name": "x"}}"#).unwrap();
    let (code, _, err) = audit(&[none.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no Pod, List or workload"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn more_owner_groups_than_iptables_loads_would_fail() {
    let groups: Vec<String> = (0..50).map(|i| format!("g{i}")).collect();
    let pod = |n: usize, extra: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p{n}", "namespace": "default"}},
              "spec": {{"initContainers": [{{"name": "istio-init", "image": "x",
                "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                         "-x", "", "-b", "*", "-d", "15090,15021,15020"{extra}],
                "env": [{{"name": "ISTIO_OUTBOUND_OWNER_GROUPS", "value": "{}"}}]}}],
                "containers": [{{"name": "app", "image": "y"}}]}}}}"#,
            groups[..n].join(",")
        )
    };
    let dir = crate::support::files::TempDir::new("audit-groups");
    for (n, extra, code) in [(49, "", 0), (50, "", 1), (50, r#", "--native-nftables""#, 0)] {
        let file = dir.path().join(format!("pod-{n}.json"));
        std::fs::write(&file, pod(n, extra)).unwrap();
        let (got, out, err) = audit(&[file.to_str().unwrap()], None);
        assert_eq!(got, code, "{n} groups {extra}: {out}{err}");
        if code == 1 {
            assert!(
                out.contains("ISTIO_OUTBOUND_OWNER_GROUPS") && out.contains("at most 49 groups load"),
                "{out}"
            );
        }
    }
}
