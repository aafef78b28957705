//! Shipping: the static release binary (no dynamic dependencies, at most 8 MiB; `render` and the
//! istio-init `--dry-run` run with it alone in an empty chroot), and the consistency of the
//! Dockerfile and the deploy/ examples with the CLI.
//!
//! The static binary is the one `scripts/build-static.sh` builds (cargo with `--target` and
//! `+crt-static`; a no-op when it is up to date), or the file named by `MESHCAP_STATIC_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;
use serde::Deserialize;

use meshcap::cli::{Cli, Command as Sub};
use meshcap::config::{Config, HostFiles, Ipv6Setting};
use meshcap::host::Env;
use meshcap::logging::LogSettings;

use crate::support::{NetNs, meshcap, meshcap_bin, netns_available};

const MAX_SIZE: u64 = 8 * 1024 * 1024;

/// The golden case of the standard istio-init arguments (spec §4.3).
const SIDECAR_CASE: &str = "golden/istio-init-sidecar";

/// What Istio's injector passes to istio-init for a default sidecar (the seed arguments): the
/// subcommand, the standard flags and the log level.
fn seed_args() -> Vec<&'static str> {
    let mut args = vec!["istio-iptables"];
    args.extend_from_slice(crate::support::SIDECAR);
    args.push("--log_output_level=default:info");
    args
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Arguments of a golden case: one per line, an empty line is an empty argument.
fn case_args(case: &str) -> Vec<String> {
    read(&format!("{case}/args")).lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------
// The static binary

/// The cargo target directory the tests were built in: the nearest ancestor of the test binary
/// `meshcap` that carries cargo's `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    let bin = meshcap_bin();
    bin.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"))
}

/// Builds (or finds) the static binary once per test run.
fn static_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("MESHCAP_STATIC_BIN") {
            return PathBuf::from(path);
        }
        let out = Command::new(repo().join("scripts/build-static.sh"))
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/build-static.sh");
        assert!(out.status.success(), "scripts/build-static.sh failed: {}", out.status);
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        let path = PathBuf::from(stdout.trim_end());
        assert!(
            path.is_file(),
            "scripts/build-static.sh printed {path:?}, which is not a file"
        );
        path
    })
}

/// What the ELF program headers say about run-time linking.
#[derive(Debug, PartialEq, Eq)]
struct Linking {
    /// A `PT_INTERP` segment: the kernel would load a dynamic loader first.
    interpreter: Option<String>,
    /// `DT_NEEDED` entries of the dynamic section: shared libraries to load.
    needed: usize,
}

/// Reads the program headers of a little-endian ELF64 file (all this project builds).
fn elf_linking(bytes: &[u8]) -> Result<Linking, String> {
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes(b.try_into().unwrap()));
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let short = || "truncated ELF file".to_string();
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    let phoff = u64_at(0x20).ok_or_else(short)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(short)? as usize;
    let phnum = u16_at(0x38).ok_or_else(short)? as usize;
    let mut linking = Linking {
        interpreter: None,
        needed: 0,
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(ph).ok_or_else(short)?;
        let offset = u64_at(ph + 8).ok_or_else(short)? as usize;
        let size = u64_at(ph + 32).ok_or_else(short)? as usize;
        let segment = bytes.get(offset..offset + size).ok_or_else(short)?;
        match p_type {
            3 => {
                let path = segment.split(|b| *b == 0).next().unwrap_or_default();
                linking.interpreter = Some(String::from_utf8_lossy(path).into_owned());
            }
            2 => {
                for entry in segment.chunks_exact(16) {
                    match i64::from_le_bytes(entry[..8].try_into().unwrap()) {
                        0 => break,
                        1 => linking.needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(linking)
}

fn linking_of(path: &Path) -> Linking {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    elf_linking(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn elf_check_sees_the_dependencies_of_a_dynamic_binary() {
    // The test binary cargo built normally is dynamically linked: the check must say so, or it
    // could not catch a static build that silently came out dynamic.
    let linking = linking_of(&meshcap_bin());
    assert!(linking.interpreter.is_some(), "{linking:?}");
    assert!(linking.needed > 0, "{linking:?}");
    assert!(elf_linking(b"#!/bin/sh\n").is_err());
}

#[test]
fn static_binary_has_no_dynamic_dependencies() {
    let bin = static_bin();
    assert_eq!(
        linking_of(bin),
        Linking {
            interpreter: None,
            needed: 0
        },
        "{} must be fully static",
        bin.display()
    );
}

#[test]
fn static_binary_is_at_most_8_mib() {
    let bin = static_bin();
    let size = std::fs::metadata(bin).expect("stat static binary").len();
    assert!(
        size <= MAX_SIZE,
        "{} is {size} bytes, more than {MAX_SIZE}",
        bin.display()
    );
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "meshcap-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether this process may call chroot(2) (effective UID 0). With `CI=true` it must.
fn can_chroot() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned);
    let root = euid.as_deref() == Some("0");
    if !root {
        assert!(!ci(), "chroot needs root; CI=true requires it");
        eprintln!("note: skipping: chroot needs root");
    }
    root
}

/// coreutils' `chroot`, looked up in PATH and the sbin directories (the child's environment is
/// cleared, so the lookup cannot be left to the spawn).
fn chroot_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("chroot"))
        .find(|p| p.is_file())
        .expect("the chroot program (coreutils) is installed")
}

/// Runs `binary ARGS` as `/meshcap` inside a fresh directory holding nothing else.
fn run_alone_in_chroot(binary: &Path, args: &[String]) -> std::process::Output {
    let root = TempDir::new("chroot");
    let inside = root.0.join("meshcap");
    std::fs::copy(binary, &inside).expect("copy binary into the chroot");
    let entries: Vec<_> = std::fs::read_dir(&root.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["meshcap"], "the chroot must hold only the binary");
    Command::new(chroot_program())
        .arg(&root.0)
        .arg("/meshcap")
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("run chroot")
}

#[test]
fn static_binary_renders_the_istio_init_payload_alone_in_an_empty_chroot() {
    if !can_chroot() {
        return;
    }
    let mut args = case_args(SIDECAR_CASE);
    args.extend(["--family".to_string(), "v4".to_string()]);
    let out = run_alone_in_chroot(static_bin(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}, stderr:\n{stderr}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        read(&format!("{SIDECAR_CASE}/expected.v4"))
    );
    assert_eq!(stderr, "");
}

#[test]
fn static_binary_dry_runs_the_istio_init_arguments_alone_in_an_empty_chroot() {
    // The apply command itself (istio-iptables, --dry-run: it plans and prints, runs nothing)
    // needs no file either: no /etc, no /proc, no shell. It detects IPv6 from the addresses of
    // the namespace it runs in, so it runs in a fresh one with a test address.
    if !can_chroot() || !netns_available() {
        return;
    }
    let pod = NetNs::new("pkgdry");
    let peer = NetNs::new("pkgpeer");
    pod.ip(&[
        "link", "add", "mc0", "type", "veth", "peer", "name", "mc1", "netns", &peer.name,
    ]);
    pod.ip(&["addr", "add", "198.51.100.2/24", "dev", "mc0"]);
    pod.ip(&["link", "set", "mc0", "up"]);

    let root = TempDir::new("chroot");
    std::fs::copy(static_bin(), root.0.join("meshcap")).expect("copy binary into the chroot");
    let mut args = vec![
        chroot_program().into_os_string(),
        root.0.clone().into_os_string(),
        "/meshcap".into(),
    ];
    args.extend(seed_args().into_iter().map(Into::into));
    args.push("--dry-run".into());
    let out = Command::new("ip")
        .args(["netns", "exec", &pod.name])
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("run ip netns exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}, stderr:\n{stderr}", out.status);
    let payload = read(&format!("{SIDECAR_CASE}/expected.v4"));
    assert!(stderr.contains(&format!("the following input:\n{payload}")), "{stderr}");
}

#[test]
fn the_dynamic_binary_does_not_run_in_the_empty_chroot() {
    // Control for the test above: the same empty root really lacks the loader and libc.
    if !can_chroot() {
        return;
    }
    let out = run_alone_in_chroot(&meshcap_bin(), &["--version".to_string()]);
    assert!(
        !out.status.success(),
        "a dynamic binary ran without its loader: {out:?}"
    );
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

/// Parses `meshcap ARGS` with meshcap's own parser, then validates the capture flags and the log
/// flags as the apply command does (no host files are needed for these arguments).
fn parse_apply_args(args: &[&str]) -> Config {
    let cli = Cli::try_parse_from(std::iter::once("meshcap").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("meshcap cannot parse {args:?}:\n{e}"));
    LogSettings::from_flags(&cli.log).unwrap_or_else(|e| panic!("log flags of {args:?}: {e}"));
    let Some(Sub::IstioIptables(apply)) = &cli.command else {
        panic!("{args:?} must select the istio-iptables command, got {:?}", cli.command);
    };
    let env = Env::from_pairs::<&str, &str>([]);
    Config::from_flags(
        &apply.capture,
        &env,
        &HostFiles::default(),
        Ipv6Setting::Explicit(false),
    )
    .unwrap_or_else(|e| panic!("invalid configuration {args:?}: {e}"))
}

#[test]
fn example_pod_runs_meshcap_with_the_istio_init_arguments_verbatim() {
    let pod = example_pod();
    let init = istio_init(&pod);
    assert!(init.image.contains("/meshcap:"), "istio-init image {}", init.image);
    // `args` only: the image's entrypoint is meshcap, as Istio's injected istio-init expects.
    assert!(init.command.is_empty(), "istio-init must not override the entrypoint");
    assert_eq!(init.args, seed_args());

    let config = parse_apply_args(&seed_args());
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
    // reviewed payload of the standard sidecar (spec §4.3).
    let pod = example_pod();
    let init = istio_init(&pod);
    assert_eq!(init.args.first().map(String::as_str), Some("istio-iptables"));
    let mut args: Vec<&str> = vec!["render"];
    args.extend(init.args[1..].iter().map(String::as_str));
    args.extend(["--family", "v4"]);
    let out = meshcap(&args).output().expect("run meshcap");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        read(&format!("{SIDECAR_CASE}/expected.v4"))
    );
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
    parse_apply_args(&full);
    // With Istio CNI the same image runs as istio-validation.
    let mut validation = seed_args();
    validation.extend(["--run-validation", "--skip-rule-apply"]);
    let config = parse_apply_args(&validation);
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
