//! `meshcap audit`: would these pods' `istio-init` / `istio-validation` containers pass
//! meshcap's validation? Reads Kubernetes objects (JSON or YAML, one document or several, a
//! `List`), finds the pod spec of each Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job
//! and CronJob, and runs the same parsing (`cli`) and validation (`config`) as `meshcap
//! istio-iptables` on each such container's args and literal env, and the rule limit
//! (`plan::budget`). Nothing is applied, no host file is read (resolv.conf and passwd are the
//! pod's, unknown here), so the answer is about the values alone.

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{CaptureFlags, Cli, Command};
use crate::config::{Config, HostFiles};
use crate::error::{Error, Result};
use crate::sys::host::Env;

/// The init containers Istio's injector adds that run istio-iptables flags.
pub(crate) const CONTAINERS: [&str; 2] = ["istio-init", "istio-validation"];

/// One istio container of one workload and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) container: String,
    /// `None`: meshcap accepts the arguments.
    pub(crate) error: Option<String>,
    /// What could not be evaluated (`valueFrom` variables), and non-fatal remarks.
    pub(crate) notes: Vec<String>,
}

/// The audit of a whole input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Audit {
    /// Workloads (pod templates) read, with or without istio containers.
    pub(crate) workloads: usize,
    pub(crate) findings: Vec<Finding>,
}

impl Audit {
    pub(crate) fn failures(&self) -> usize {
        self.findings.iter().filter(|f| f.error.is_some()).count()
    }

    /// 0 every container passes, 1 some would fail.
    pub(crate) fn exit_code(&self) -> i32 {
        if self.failures() == 0 { 0 } else { 1 }
    }

    pub(crate) fn text(&self) -> String {
        let name = |f: &Finding| format!("{}/{}/{}", f.kind, f.namespace, f.name);
        let width = self.findings.iter().map(|f| name(f).len()).max().unwrap_or(8).max(8);
        let mut out = format!("{:width$}  {:16}  RESULT\n", "WORKLOAD", "CONTAINER");
        for f in &self.findings {
            let result = match &f.error {
                None => "OK".to_string(),
                Some(e) => format!("FAIL meshcap: {e}"),
            };
            out.push_str(&format!("{:width$}  {:16}  {result}\n", name(f), f.container));
            for n in &f.notes {
                out.push_str(&format!("{:width$}  {:16}  note: {n}\n", "", ""));
            }
        }
        out.push_str(&format!(
            "# {} workload(s), {} istio container(s), {} would fail\n",
            self.workloads,
            self.findings.len(),
            self.failures()
        ));
        out
    }

    pub(crate) fn json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            version: u32,
            workloads: usize,
            containers: usize,
            failures: usize,
            findings: &'a [Finding],
        }
        let mut s = serde_json::to_string_pretty(&Doc {
            version: 1,
            workloads: self.workloads,
            containers: self.findings.len(),
            failures: self.failures(),
            findings: &self.findings,
        })
        .expect("an audit serialises");
        s.push('\n');
        s
    }
}

/// Reads `text` (JSON, or YAML with one or more documents) into Kubernetes objects.
pub(crate) fn read_objects(text: &str, source: &str) -> Result<Vec<Value>> {
    let bad = |why: String| Error::NotKubernetes {
        source: source.to_string(),
        why,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // `kubectl -o json` output: one document (large inputs stay on this fast path).
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        return Ok(match v {
            Value::Array(items) => items,
            v => vec![v],
        });
    }
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// A workload's pod spec: the object's own (Pod) or its template's.
fn pod_spec(obj: &Value) -> Option<&Value> {
    let kind = obj.get("kind")?.as_str()?;
    match kind {
        "Pod" => obj.get("spec"),
        "PodTemplate" => obj.pointer("/template/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            obj.pointer("/spec/template/spec")
        }
        "CronJob" => obj.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// Audits every workload in `objects` (Lists are opened, in order).
pub(crate) fn audit(objects: &[Value]) -> Result<Audit> {
    let mut out = Audit::default();
    let mut stack: Vec<&Value> = objects.iter().rev().collect();
    let mut recognised = 0usize;
    while let Some(obj) = stack.pop() {
        if let Some(items) = obj.get("items").and_then(Value::as_array) {
            recognised += 1;
            stack.extend(items.iter().rev());
            continue;
        }
        let Some(spec) = pod_spec(obj) else { continue };
        recognised += 1;
        out.workloads += 1;
        let meta = |key: &str| {
            obj.pointer(&format!("/metadata/{key}"))
                .and_then(Value::as_str)
                .unwrap_or(if key == "namespace" { "default" } else { "" })
                .to_string()
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        let containers = spec.get("initContainers").and_then(Value::as_array);
        for c in containers.into_iter().flatten() {
            let Some(cname) = c.get("name").and_then(Value::as_str) else {
                continue;
            };
            if !CONTAINERS.contains(&cname) {
                continue;
            }
            let (error, notes) = container_verdict(c);
            out.findings.push(Finding {
                kind: kind.clone(),
                namespace: meta("namespace"),
                name: meta("name"),
                container: cname.to_string(),
                error,
                notes,
            });
        }
    }
    if recognised == 0 && !objects.is_empty() {
        return Err(Error::NoWorkload);
    }
    Ok(out)
}

/// The argv (after `meshcap`) and env of an istio container, as the pod would run them.
pub(crate) fn container_invocation(c: &Value) -> (Vec<String>, Env, Vec<String>) {
    let strings = |key: &str| -> Vec<String> {
        c.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut args = strings("args");
    // Istio's injected args start with the subcommand; an explicit command may carry it instead
    // (`command: [pilot-agent, istio-iptables]`), and bare flags mean the same.
    let named = args
        .first()
        .is_some_and(|a| a == "istio-iptables" || a == "istio-clean-iptables");
    if !named {
        args.insert(0, "istio-iptables".to_string());
    }
    let mut pairs = Vec::new();
    let mut notes = Vec::new();
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = e.get("name").and_then(Value::as_str) else {
            continue;
        };
        match (e.get("value"), e.get("valueFrom")) {
            (_, Some(_)) => notes.push(format!("{name} is set with valueFrom: not evaluated")),
            (Some(Value::String(v)), _) => pairs.push((name.to_string(), v.clone())),
            (Some(v), _) => pairs.push((name.to_string(), v.to_string())),
            (None, None) => pairs.push((name.to_string(), String::new())),
        }
    }
    (args, Env::from_pairs(pairs), notes)
}

/// For `check --from-pod-spec`: the capture flags and literal env of the istio container of the
/// one workload in `text` (`istio-init`, else `istio-validation`), with notes on what could not
/// be evaluated.
pub(crate) fn pod_spec_flags(text: &str, source: &str) -> Result<(CaptureFlags, Env, Vec<String>)> {
    let refuse = |why: String| Error::invalid("--from-pod-spec", source, why);
    let objects = read_objects(text, source)?;
    let mut found = Vec::new();
    let mut stack: Vec<&Value> = objects.iter().rev().collect();
    while let Some(obj) = stack.pop() {
        if let Some(items) = obj.get("items").and_then(Value::as_array) {
            stack.extend(items.iter().rev());
            continue;
        }
        let Some(spec) = pod_spec(obj) else { continue };
        let inits = spec.get("initContainers").and_then(Value::as_array);
        let pick = |name: &str| {
            inits
                .into_iter()
                .flatten()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        };
        if let Some(c) = pick("istio-init").or_else(|| pick("istio-validation")) {
            found.push(c);
        }
    }
    let container = match found.as_slice() {
        [one] => *one,
        [] => return Err(refuse("no istio-init or istio-validation init container in it".into())),
        more => {
            return Err(refuse(format!(
                "{} workloads with an istio container; give one",
                more.len()
            )));
        }
    };
    let (args, env, notes) = container_invocation(container);
    let argv = std::iter::once("meshcap".to_string()).chain(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        refuse(
            text.lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string(),
        )
    })?;
    match cli.command {
        Some(Command::IstioIptables(a)) | Some(Command::IstioCleanIptables(a)) => Ok((a.0.capture, env, notes)),
        _ => Err(refuse("its args are not an istio-iptables command".into())),
    }
}

/// meshcap's verdict on one container: `None` when the arguments pass.
fn container_verdict(c: &Value) -> (Option<String>, Vec<String>) {
    let (args, env, notes) = container_invocation(c);
    (validate(&args, &env).err(), notes)
}

/// Parses and validates `args` (after `meshcap`) with `env` as `meshcap istio-iptables` would,
/// without reading host files; the error is meshcap's message.
pub(crate) fn validate(args: &[String], env: &Env) -> std::result::Result<(), String> {
    let argv = std::iter::once("meshcap".to_string()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        text.lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string()
    })?;
    let flags = match &cli.command {
        Some(Command::IstioIptables(a)) | Some(Command::IstioCleanIptables(a)) => &a.capture,
        _ => return Err("not an istio-iptables command".into()),
    };
    let files = HostFiles {
        passwd: "/dev/null".into(),
        resolv_conf: "/dev/null".into(),
    };
    let ipv6 = Config::ipv6_setting(&None, env).map_err(|e| e.to_string())?;
    let config = Config::from_flags(flags, env, &files, ipv6).map_err(|e| e.to_string())?;
    // What the apply refuses before it reads any file: an owner-group list iptables-restore
    // cannot load. (Unknown user and group names need the pod image's accounts: not audited.)
    if !config.skip_rule_apply
        && let Some(e) = crate::config::too_many_groups_for_iptables(&config)
    {
        return Err(e.to_string());
    }
    // The rule limit as the pod would meet it; without ENABLE_INBOUND_IPV6 the pod's addresses
    // decide, so the audit assumes the larger, dual-stack plan.
    let ipv6 = !matches!(ipv6, crate::config::Ipv6Setting::Explicit(false));
    crate::plan::budget::check(&config, ipv6)
        .map(drop)
        .map_err(|e| e.to_string())
}
