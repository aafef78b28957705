//! Shipping: the consistency of the Dockerfile and the deploy/ examples with the CLI. (The
//! static binary itself is built and checked by the image build, not by `cargo test`.)

use std::path::Path;

use serde::Deserialize;

use crate::support::api::apply_config;
use crate::support::flags::args_file;
use crate::support::{Meshcap, SIDECAR};

/// The golden case of the standard istio-init arguments (istio-compat §4.3).
const SIDECAR_CASE: &str = "golden/istio-init-sidecar";

/// What Istio's injector passes to istio-init for a default sidecar (the seed arguments): the
/// subcommand, the standard flags and the log level.
fn seed_args() -> Vec<&'static str> {
    [&["istio-iptables"], SIDECAR, &["--log_output_level=default:info"]].concat()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Arguments of a golden case.
fn case_args(case: &str) -> Vec<String> {
    args_file(&read(&format!("{case}/args")))
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_is_consistent_with_the_binary() {
    let dockerfile = read("Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // The runtime stage is the last one (the default target) and runs meshcap with Istio's args.
    let last_from = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    assert!(
        instructions[last_from].ends_with(" AS runtime"),
        "{}",
        instructions[last_from]
    );
    let runtime = &instructions[last_from..];
    assert_eq!(
        runtime.iter().rfind(|l| l.starts_with("ENTRYPOINT")),
        Some(&r#"ENTRYPOINT ["meshcap"]"#)
    );
    assert!(runtime.contains(&concat!("ARG VERSION=", env!("CARGO_PKG_VERSION"))));
    // Distroless: the root file system scripts/image/rootfs.sh picks out of Debian's packages
    // (scripts/image.sh test proves its content), then the binary.
    assert!(runtime.contains(&"COPY --from=userland /rootfs/ /"));
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with("COPY --from=binary /out/meshcap /usr/local/bin/meshcap"))
    );
    assert!(instructions.iter().any(|l| l.contains("scripts/image/rootfs.sh")));
    // The builder uses the same static build as this test suite.
    assert!(instructions.iter().any(|l| l.contains("scripts/build-static.sh")));
    for tool in ["curl", "wget"] {
        assert!(
            !instructions.iter().any(|l| l.contains(tool)),
            "the image build must not download with {tool}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/

#[derive(Debug, Deserialize)]
struct Pod {
    kind: String,
    spec: PodSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    init_containers: Vec<Container>,
    containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    security_context: Option<SecurityContext>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContext {
    run_as_user: Option<i64>,
    run_as_non_root: Option<bool>,
    privileged: Option<bool>,
    capabilities: Option<Capabilities>,
}

#[derive(Debug, Deserialize)]
struct Capabilities {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    drop: Vec<String>,
}

fn example_pod() -> Pod {
    // Like the Kubernetes API, the typed parse refuses a number where a string argument belongs.
    let pod: Pod = serde_yaml::from_str(&read("deploy/pod.yaml")).expect("deploy/pod.yaml parses as a Pod");
    assert_eq!(pod.kind, "Pod");
    pod
}

fn istio_init(pod: &Pod) -> &Container {
    let inits: Vec<_> = pod
        .spec
        .init_containers
        .iter()
        .filter(|c| c.name == "istio-init")
        .collect();
    assert_eq!(inits.len(), 1, "one istio-init init container");
    inits[0]
}

#[test]
fn example_pod_runs_meshcap_with_the_istio_init_arguments_verbatim() {
    let pod = example_pod();
    let init = istio_init(&pod);
    assert!(init.image.contains("/meshcap:"), "istio-init image {}", init.image);
    // `args` only: the image's entrypoint is meshcap, as Istio's injected istio-init expects.
    assert!(init.command.is_empty(), "istio-init must not override the entrypoint");
    assert_eq!(init.args, seed_args());

    let config = apply_config(&seed_args());
    assert_eq!(config.proxy_port.to_string(), "15001");
    assert_eq!(config.inbound_capture_port.to_string(), "15006");

    let sc = init.security_context.as_ref().expect("istio-init securityContext");
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.run_as_non_root, Some(false));
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.add, ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop, ["ALL"]);

    for c in &pod.spec.containers {
        assert_eq!(c.image, init.image, "container {} uses the same image", c.name);
    }
}

#[test]
fn example_pod_arguments_render_the_golden_payload() {
    // The Pod's own list with `render` in place of `istio-iptables` must print exactly the
    // reviewed payload of the standard sidecar (istio-compat §4.3).
    let pod = example_pod();
    let init = istio_init(&pod);
    assert_eq!(init.args.first().map(String::as_str), Some("istio-iptables"));
    Meshcap::new()
        .arg("render")
        .args(&init.args[1..])
        .args(["--family", "v4"])
        .run()
        .success()
        .stdout_is(&read(&format!("{SIDECAR_CASE}/expected.v4")));
    let golden: Vec<String> = case_args(SIDECAR_CASE);
    assert_eq!(
        golden[1..],
        init.args[1..init.args.len() - 1],
        "golden case and Pod use the same flags"
    );
}

#[test]
fn every_argument_istio_injection_can_pass_is_accepted() {
    // Istio's injection template adds these from annotations and values (deploy/README.md).
    let full = [
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "TPROXY",
        "-i",
        "10.0.0.0/8,fd00::/8",
        "-x",
        "10.96.0.1/32",
        "-b",
        "8080,9090",
        "-d",
        "15090,15021,15020",
        "-q",
        "443",
        "-o",
        "3306",
        "-k",
        "eth1",
        "-c",
        "eth2",
        "--log_output_level=default:debug",
        "--log_as_json",
        "--force-apply",
        "--native-nftables",
    ];
    apply_config(&full);
    // With Istio CNI the same image runs as istio-validation.
    let mut validation = seed_args();
    validation.extend(["--run-validation", "--skip-rule-apply"]);
    let config = apply_config(&validation);
    assert!(config.run_validation && config.skip_rule_apply);
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn image_at<'a>(value: &'a serde_yaml::Value, path: &[&str], rel: &str) -> &'a str {
    let mut v = value;
    for key in path {
        v = v
            .get(*key)
            .unwrap_or_else(|| panic!("{rel}: no {key} in {}", path.join(".")));
    }
    v.as_str()
        .unwrap_or_else(|| panic!("{rel}: {} is not a string", path.join(".")))
}

#[test]
fn istio_install_files_select_the_example_image() {
    let pod = example_pod();
    let image = istio_init(&pod).image.as_str();

    let values = yaml("deploy/istio-values.yaml");
    let from_values = image_at(&values, &["global", "proxy_init", "image"], "istio-values.yaml");
    // Istio's template uses global.proxy_init.image only when it contains '/'.
    assert!(from_values.contains('/'), "{from_values}");
    assert_eq!(from_values, image);

    let operator = yaml("deploy/istio-operator.yaml");
    assert_eq!(image_at(&operator, &["kind"], "istio-operator.yaml"), "IstioOperator");
    assert_eq!(
        image_at(
            &operator,
            &["spec", "values", "global", "proxy_init", "image"],
            "istio-operator.yaml"
        ),
        image
    );

    let per_workload = yaml("deploy/istio-values-per-workload.yaml");
    let template = image_at(
        &per_workload,
        &["sidecarInjectorWebhook", "templates", "meshcap"],
        "istio-values-per-workload.yaml",
    );
    let overlay: serde_yaml::Value = serde_yaml::from_str(template).expect("the meshcap template is YAML");
    let inits = overlay["spec"]["initContainers"]
        .as_sequence()
        .expect("spec.initContainers");
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["name"].as_str(), Some("istio-init"));
    assert_eq!(inits[0]["image"].as_str(), Some(image));
    // Only the image: anything else would override what Istio's own template computes.
    assert_eq!(inits[0].as_mapping().map(|m| m.len()), Some(2));
}
