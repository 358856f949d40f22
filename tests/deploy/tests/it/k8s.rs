//! deploy/k8s: every manifest parses; kustomizations reference what exists; the base (as
//! written) and each overlay (rendered by `kubectl kustomize`, when kubectl is installed)
//! hold the objects the issue asks for, wired together consistently.

use anyhow::{Context, Result, bail, ensure};
use livegate_deploy_tests::{
    duration_secs, known_env_vars, read, repo_root, str_at, yaml_documents,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const K8S: &str = "deploy/k8s";
const GATEWAY: &str = "livegate-gateway";
const AUTH: &str = "livegate-auth";
const METERING: &str = "livegate-metering";
/// What the gateway spends after SIGTERM besides the drain grace: the event flush bound.
const GATEWAY_FLUSH_SECS: u64 = 10;
/// Metering's default METERING_SHUTDOWN_TIMEOUT.
const METERING_SHUTDOWN_SECS: u64 = 20;

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn is_kustomization(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml")
}

fn docs_of(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    yaml_documents(&text).with_context(|| format!("{}", path.display()))
}

fn kind(v: &Value) -> &str {
    str_at(v, "/kind").unwrap_or_default()
}

fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or_default()
}

fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    docs.iter().find(|d| kind(d) == k && name(d) == n)
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn every_manifest_parses_with_identity() -> Result<()> {
    let files = yaml_files(&repo_root().join(K8S))?;
    ensure!(files.len() >= 8, "only {} YAML files", files.len());
    for f in &files {
        let docs = docs_of(f)?;
        ensure!(!docs.is_empty(), "{}: empty", f.display());
        for d in &docs {
            let what = format!("{}: {}", f.display(), d);
            ensure!(
                str_at(d, "/apiVersion").is_some(),
                "no apiVersion in {what}"
            );
            ensure!(!kind(d).is_empty(), "no kind in {what}");
            if is_kustomization(f) {
                ensure!(matches!(kind(d), "Kustomization" | "Component"), "{what}");
            } else {
                ensure!(!name(d).is_empty(), "no metadata.name in {what}");
            }
        }
    }
    Ok(())
}

/// Paths a kustomization refers to, relative to its directory.
fn referenced(k: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for field in ["resources", "components", "patchesStrategicMerge", "crds"] {
        out.extend(strings(k.get(field)).into_iter().map(str::to_string));
    }
    for p in k
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(path) = str_at(p, "/path") {
            out.push(path.to_string());
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for g in k.get(field).and_then(Value::as_array).into_iter().flatten() {
            for f in strings(g.get("files")) {
                out.push(f.split_once('=').map_or(f, |(_, p)| p).to_string());
            }
            out.extend(strings(g.get("envs")).into_iter().map(str::to_string));
        }
    }
    out
}

#[test]
fn kustomizations_reference_every_file_and_only_existing_ones() -> Result<()> {
    let root = repo_root().join(K8S);
    let kustomizations: Vec<PathBuf> = yaml_files(&root)?
        .into_iter()
        .filter(|p| is_kustomization(p))
        .collect();
    let dirs: BTreeSet<PathBuf> = kustomizations
        .iter()
        .filter_map(|p| p.parent().and_then(|d| d.canonicalize().ok()))
        .collect();
    for needed in ["base", "overlays/example"] {
        ensure!(
            dirs.contains(&root.join(needed).canonicalize()?),
            "no kustomization in {needed}"
        );
    }
    for k_path in &kustomizations {
        let dir = k_path.parent().context("kustomization dir")?;
        let k = docs_of(k_path)?.remove(0);
        let refs = referenced(&k);
        for r in &refs {
            let target = dir.join(r);
            ensure!(
                target.is_file() || (target.is_dir() && dirs.contains(&target.canonicalize()?)),
                "{}: {r} is neither a file nor a kustomization directory",
                k_path.display()
            );
        }
        // Every manifest beside it is used (nothing forgotten out of the build).
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default()
                .to_string();
            if path.is_file() && !is_kustomization(&path) && !file.ends_with(".md") {
                ensure!(
                    refs.contains(&file),
                    "{}: {file} is not referenced",
                    k_path.display()
                );
            }
        }
    }
    Ok(())
}

/// The base as written: every resource file of base/kustomization.yaml.
fn base_docs() -> Result<Vec<Value>> {
    let dir = repo_root().join(K8S).join("base");
    let k = docs_of(&dir.join("kustomization.yaml"))?.remove(0);
    let mut docs = Vec::new();
    for r in strings(k.get("resources")) {
        docs.extend(docs_of(&dir.join(r))?);
    }
    Ok(docs)
}

#[test]
fn the_base_is_complete_and_consistent() -> Result<()> {
    let docs = base_docs()?;
    check(&docs, "base")?;
    // The active-sessions autoscaling example sits in the HPA, commented.
    let gateway_yaml = read(format!("{K8S}/base/gateway.yaml"))?;
    assert!(gateway_yaml.contains("#       name: livegate_gateway_sessions_active"));
    // Secrets are inert until filled in.
    let secret = find(&docs, "Secret", "livegate-secrets").context("livegate-secrets")?;
    for (k, v) in secret
        .get("stringData")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        assert_eq!(
            v.as_str(),
            Some(""),
            "the base must not ship a value for {k}"
        );
    }
    Ok(())
}

fn kubectl() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn render(overlay: &str) -> Result<Vec<Value>> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join(K8S).join(overlay))
        .output()
        .context("running kubectl kustomize")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout)?)
}

#[test]
fn overlays_render_complete_and_consistent() -> Result<()> {
    if !kubectl() {
        eprintln!("SKIPPED: kubectl is not installed; the overlays were not rendered");
        return Ok(());
    }
    let base = render("base")?;
    check(&base, "base (rendered)")?;
    let overlays_dir = repo_root().join(K8S).join("overlays");
    let mut overlays = Vec::new();
    for entry in std::fs::read_dir(&overlays_dir)? {
        let path = entry?.path();
        if path.join("kustomization.yaml").is_file() {
            overlays.push(format!(
                "overlays/{}",
                path.file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default()
            ));
        }
    }
    ensure!(overlays.iter().any(|o| o == "overlays/example"));
    for overlay in &overlays {
        let docs = render(overlay)?;
        check(&docs, overlay)?;
        let ns = find(&docs, "Namespace", "livegate").map(|_| "livegate");
        for d in &docs {
            if matches!(kind(d), "Namespace") {
                continue;
            }
            assert_eq!(
                str_at(d, "/metadata/namespace"),
                ns,
                "{overlay}: {} {} outside the namespace",
                kind(d),
                name(d)
            );
        }
        let sa = find(&docs, "ServiceAccount", AUTH).context("auth ServiceAccount")?;
        let gsa = str_at(sa, "/metadata/annotations/iam.gke.io~1gcp-service-account")
            .context("workload identity annotation")?;
        assert!(
            !gsa.contains("PROJECT_ID"),
            "{overlay}: placeholder GSA {gsa}"
        );
    }
    // The key-file alternative mounts the credentials Secret and points auth at it.
    if let Some(keyfile) = overlays.iter().find(|o| o.contains("key-file")) {
        let docs = render(keyfile)?;
        let auth = find(&docs, "Deployment", AUTH).context("auth")?;
        let c = &containers(auth)[0];
        let path = env_value(c, "GOOGLE_APPLICATION_CREDENTIALS").context("GAC")?;
        let mount = c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|m| str_at(m, "/mountPath").is_some_and(|p| path.starts_with(&format!("{p}/"))))
            .context("GOOGLE_APPLICATION_CREDENTIALS not inside a mount")?;
        assert_eq!(mount.get("readOnly").and_then(Value::as_bool), Some(true));
        let vol_name = str_at(mount, "/name").unwrap_or_default();
        let vol = auth
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|v| str_at(v, "/name") == Some(vol_name))
            .context("volume")?;
        let secret_name = str_at(vol, "/secret/secretName").context("secret volume")?;
        let secret = find(&docs, "Secret", secret_name).context("credentials Secret")?;
        let file = path.rsplit('/').next().unwrap_or_default();
        assert!(
            secret.pointer(&format!("/data/{file}")).is_some(),
            "Secret lacks {file}"
        );
    }
    Ok(())
}

fn containers(deploy: &Value) -> Vec<Value> {
    deploy
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn env_value(container: &Value, var: &str) -> Option<String> {
    container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| str_at(e, "/name") == Some(var))
        .and_then(|e| str_at(e, "/value"))
        .map(str::to_string)
}

/// The port number a probe or Service's `port`/`targetPort` means for `container`.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok().or_else(|| {
            container
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| str_at(p, "/name") == Some(s))
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_u64)
        }),
        _ => None,
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Checks a set of manifests (the base as written, or a rendered overlay).
fn check(docs: &[Value], what: &str) -> Result<()> {
    let known = known_env_vars()?;
    let ctx = |m: &str| format!("{what}: {m}");

    // --- Deployments: probes, resources, security, grace periods -------------------------
    let mut pods: BTreeMap<String, (Value, Value)> = BTreeMap::new(); // name → (labels, container)
    for name_ in [GATEWAY, AUTH, METERING] {
        let d = find(docs, "Deployment", name_)
            .with_context(|| ctx(&format!("no Deployment {name_}")))?;
        let labels = d
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or_default();
        let selector = d
            .pointer("/spec/selector/matchLabels")
            .context("selector")?;
        ensure!(
            labels_match(selector, &labels),
            "{}",
            ctx(&format!("{name_}: selector ≠ labels"))
        );
        let spec = d.pointer("/spec/template/spec").context("pod spec")?;
        ensure!(
            spec.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true)),
            "{}",
            ctx(&format!("{name_}: runAsNonRoot"))
        );
        let cs = containers(d);
        ensure!(cs.len() == 1, "{}", ctx(&format!("{name_}: one container")));
        let c = &cs[0];
        ensure!(
            str_at(c, "/image").is_some(),
            "{}",
            ctx(&format!("{name_}: image"))
        );
        for r in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                ensure!(
                    c.pointer(&format!("/resources/{r}/{res}")).is_some(),
                    "{}",
                    ctx(&format!("{name_}: resources.{r}.{res}"))
                );
            }
        }
        for probe in ["readinessProbe", "livenessProbe"] {
            ensure!(
                c.get(probe).is_some(),
                "{}",
                ctx(&format!("{name_}: {probe}"))
            );
        }
        ensure!(
            c.pointer("/securityContext/allowPrivilegeEscalation") == Some(&Value::Bool(false)),
            "{}",
            ctx(&format!("{name_}: allowPrivilegeEscalation"))
        );
        // Env var names are ones livegate reads.
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            let n = str_at(e, "/name").unwrap_or_default();
            ensure!(
                known.contains(n),
                "{}",
                ctx(&format!("{name_}: unknown variable {n}"))
            );
        }
        // Its own NATS user, its own password, and the NATS CA (only the CA) mounted.
        let user = name_.trim_start_matches("livegate-");
        ensure!(
            env_value(c, "NATS_USER").as_deref() == Some(user),
            "{}",
            ctx(&format!("{name_}: NATS_USER={user}"))
        );
        let password = c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| str_at(e, "/name") == Some("NATS_PASSWORD"))
            .and_then(|e| e.pointer("/valueFrom/secretKeyRef/key"))
            .and_then(Value::as_str);
        let own = format!("LIVEGATE_NATS_{}_PASSWORD", user.to_uppercase());
        ensure!(
            password == Some(own.as_str()),
            "{}",
            ctx(&format!(
                "{name_}: NATS_PASSWORD from {own}, not {password:?}"
            ))
        );
        let mounted_ca = c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|m| str_at(m, "/mountPath") == Some("/etc/nats/tls"));
        let ca_volume = spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|v| str_at(v, "/secret/secretName") == Some("livegate-nats-ca"));
        let only_ca = ca_volume
            .and_then(|v| v.pointer("/secret/items"))
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items.len() == 1 && items.iter().all(|i| str_at(i, "/key") == Some("ca.crt"))
            });
        ensure!(
            mounted_ca && only_ca,
            "{}",
            ctx(&format!(
                "{name_}: the NATS CA (ca.crt only) at /etc/nats/tls"
            ))
        );
        pods.insert(name_.to_string(), (labels, c.clone()));
    }
    let grace = |n: &str| -> Result<u64> {
        find(docs, "Deployment", n)
            .and_then(|d| d.pointer("/spec/template/spec/terminationGracePeriodSeconds"))
            .and_then(Value::as_u64)
            .with_context(|| ctx(&format!("{n}: terminationGracePeriodSeconds")))
    };
    let http_probe = |c: &Value, probe: &str, path: &str, port: u64| -> Result<()> {
        let p = c.get(probe).context("probe")?;
        ensure!(
            str_at(p, "/httpGet/path") == Some(path),
            "{}",
            ctx(&format!("{probe} path should be {path}: {p}"))
        );
        let resolved = p.pointer("/httpGet/port").and_then(|v| resolve_port(c, v));
        ensure!(
            resolved == Some(port),
            "{}",
            ctx(&format!("{probe} port {resolved:?} ≠ {port}"))
        );
        Ok(())
    };

    let gw = &pods[GATEWAY].1;
    http_probe(gw, "readinessProbe", "/readyz", 4000)?;
    http_probe(gw, "livenessProbe", "/healthz", 4000)?;
    let drain =
        duration_secs(&env_value(gw, "GATEWAY_DRAIN_GRACE").unwrap_or_else(|| "10s".into()))?;
    let pre_stop: u64 = gw
        .pointer("/lifecycle/preStop/exec/command")
        .and_then(Value::as_array)
        .and_then(|c| c.last())
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            gw.pointer("/lifecycle/preStop/sleep/seconds")
                .and_then(Value::as_u64)
        })
        .unwrap_or(0);
    let gw_grace = grace(GATEWAY)?;
    // README: keep terminationGracePeriodSeconds above grace + 15 s (plus any preStop).
    ensure!(
        gw_grace > pre_stop + drain + GATEWAY_FLUSH_SECS + 5,
        "{}",
        ctx(&format!(
            "gateway grace {gw_grace}s ≤ preStop {pre_stop} + drain {drain} + flush"
        ))
    );
    ensure!(env_value(gw, "GATEWAY_LISTEN").is_some_and(|v| v.ends_with(":4000")));

    let auth = &pods[AUTH].1;
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = auth
            .pointer(&format!("/{probe}/grpc/port"))
            .and_then(|p| resolve_port(auth, p));
        ensure!(
            port == Some(50051),
            "{}",
            ctx(&format!("auth {probe}: grpc on 50051"))
        );
    }
    ensure!(env_value(auth, "AUTH_LISTEN").is_some_and(|v| v.ends_with(":50051")));

    let metering = &pods[METERING].1;
    http_probe(metering, "readinessProbe", "/readyz", 9464)?;
    http_probe(metering, "livenessProbe", "/healthz", 9464)?;
    let shutdown = env_value(metering, "METERING_SHUTDOWN_TIMEOUT")
        .map(|v| duration_secs(&v))
        .transpose()?
        .unwrap_or(METERING_SHUTDOWN_SECS);
    ensure!(
        grace(METERING)? > shutdown,
        "{}",
        ctx("metering grace ≤ its shutdown timeout")
    );
    ensure!(env_value(metering, "METERING_LISTEN").is_some_and(|v| v.ends_with(":9464")));
    let metering_replicas = find(docs, "Deployment", METERING)
        .and_then(|d| d.pointer("/spec/replicas"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
    ensure!(
        metering_replicas >= 2,
        "{}",
        ctx("metering replicas share the durable consumer: ≥ 2")
    );

    // Prometheus scrape annotations where there are metrics.
    for (n, port) in [(GATEWAY, 4000), (METERING, 9464)] {
        let a = find(docs, "Deployment", n)
            .and_then(|d| d.pointer("/spec/template/metadata/annotations"))
            .with_context(|| ctx(&format!("{n}: no pod annotations")))?;
        ensure!(
            str_at(a, "/prometheus.io~1scrape") == Some("true"),
            "{}",
            ctx(n)
        );
        ensure!(
            str_at(a, "/prometheus.io~1port") == Some(&*port.to_string()),
            "{}",
            ctx(n)
        );
        ensure!(
            str_at(a, "/prometheus.io~1path") == Some("/metrics"),
            "{}",
            ctx(n)
        );
    }

    // --- References: Secrets, ConfigMaps, ServiceAccounts --------------------------------
    for d in docs.iter().filter(|d| kind(d) == "Deployment") {
        let spec = d.pointer("/spec/template/spec").context("pod spec")?;
        if let Some(sa) = str_at(spec, "/serviceAccountName") {
            ensure!(
                find(docs, "ServiceAccount", sa).is_some(),
                "{}",
                ctx(&format!("no ServiceAccount {sa}"))
            );
        }
        for c in containers(d) {
            for ef in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(cm) = str_at(ef, "/configMapRef/name") {
                    let cm_doc = find(docs, "ConfigMap", cm)
                        .with_context(|| ctx(&format!("no ConfigMap {cm}")))?;
                    for k in cm_doc
                        .get("data")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k)
                    {
                        ensure!(
                            known.contains(k),
                            "{}",
                            ctx(&format!("ConfigMap {cm}: unknown variable {k}"))
                        );
                    }
                }
                if let Some(s) = str_at(ef, "/secretRef/name") {
                    ensure!(
                        find(docs, "Secret", s).is_some(),
                        "{}",
                        ctx(&format!("no Secret {s}"))
                    );
                }
            }
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                    let s = str_at(r, "/name").unwrap_or_default();
                    let key = str_at(r, "/key").unwrap_or_default();
                    let secret =
                        find(docs, "Secret", s).with_context(|| ctx(&format!("no Secret {s}")))?;
                    ensure!(
                        secret.pointer(&format!("/data/{key}")).is_some()
                            || secret.pointer(&format!("/stringData/{key}")).is_some(),
                        "{}",
                        ctx(&format!("Secret {s} has no key {key}"))
                    );
                }
                if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                    let cm = str_at(r, "/name").unwrap_or_default();
                    ensure!(
                        find(docs, "ConfigMap", cm).is_some(),
                        "{}",
                        ctx(&format!("no ConfigMap {cm}"))
                    );
                }
            }
        }
        for v in spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = str_at(v, "/secret/secretName") {
                ensure!(
                    find(docs, "Secret", s).is_some(),
                    "{}",
                    ctx(&format!("no Secret {s}"))
                );
            }
            if let Some(cm) = str_at(v, "/configMap/name") {
                ensure!(
                    find(docs, "ConfigMap", cm).is_some(),
                    "{}",
                    ctx(&format!("no ConfigMap {cm}"))
                );
            }
        }
    }
    let secret =
        find(docs, "Secret", "livegate-secrets").with_context(|| ctx("no livegate-secrets"))?;
    for key in [
        "LIVEGATE_MASTER_KEY",
        "LIVEGATE_INTERNAL_TOKEN",
        "CLICKHOUSE_PASSWORD",
        "LIVEGATE_NATS_GATEWAY_PASSWORD",
        "LIVEGATE_NATS_AUTH_PASSWORD",
        "LIVEGATE_NATS_METERING_PASSWORD",
        "LIVEGATE_NATS_CLI_PASSWORD",
        "LIVEGATE_NATS_ADMIN_PASSWORD",
    ] {
        ensure!(
            secret.pointer(&format!("/data/{key}")).is_some()
                || secret.pointer(&format!("/stringData/{key}")).is_some(),
            "{}",
            ctx(&format!("livegate-secrets lacks {key}"))
        );
    }
    let sa = find(docs, "ServiceAccount", AUTH).with_context(|| ctx("no auth ServiceAccount"))?;
    ensure!(
        str_at(sa, "/metadata/annotations/iam.gke.io~1gcp-service-account").is_some(),
        "{}",
        ctx("auth ServiceAccount lacks the workload identity annotation")
    );
    let auth_deploy = find(docs, "Deployment", AUTH).context("auth")?;
    ensure!(str_at(auth_deploy, "/spec/template/spec/serviceAccountName") == Some(AUTH));

    // --- Common configuration ------------------------------------------------------------
    let cm =
        find(docs, "ConfigMap", "livegate-config").with_context(|| ctx("no livegate-config"))?;
    for key in [
        "NATS_URL",
        "CLICKHOUSE_URL",
        "CLICKHOUSE_DATABASE",
        "AUTH_URL",
        "LIVEGATE_LOG_FORMAT",
    ] {
        ensure!(
            cm.pointer(&format!("/data/{key}")).is_some(),
            "{}",
            ctx(&format!("livegate-config lacks {key}"))
        );
    }
    ensure!(str_at(cm, "/data/LIVEGATE_LOG_FORMAT") == Some("json"));
    ensure!(
        str_at(cm, "/data/NATS_URL") == Some("tls://nats:4222")
            && str_at(cm, "/data/NATS_TLS_CA") == Some("/etc/nats/tls/ca.crt"),
        "{}",
        ctx("NATS over TLS, verified against the mounted CA")
    );
    ensure!(
        str_at(cm, "/data/AUTH_URL") == Some(&*format!("http://{AUTH}:50051")),
        "{}",
        ctx("AUTH_URL → the auth Service")
    );

    // --- Services --------------------------------------------------------------------------
    for (svc, port, deploy) in [
        (GATEWAY, 4000, GATEWAY),
        (AUTH, 50051, AUTH),
        (METERING, 9464, METERING),
    ] {
        let s = find(docs, "Service", svc).with_context(|| ctx(&format!("no Service {svc}")))?;
        ensure!(
            str_at(s, "/spec/type").unwrap_or("ClusterIP") == "ClusterIP",
            "{}",
            ctx(svc)
        );
        let selector = s.pointer("/spec/selector").context("selector")?;
        let matching: Vec<&String> = pods
            .iter()
            .filter(|(_, (labels, _))| labels_match(selector, labels))
            .map(|(n, _)| n)
            .collect();
        ensure!(
            matching == [deploy],
            "{}",
            ctx(&format!("Service {svc} selects {matching:?}"))
        );
        let ports = s
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .context("ports")?;
        let c = &pods[deploy].1;
        ensure!(
            ports
                .iter()
                .any(|p| p.get("port").and_then(Value::as_u64) == Some(port)
                    && p.get("targetPort").and_then(|t| resolve_port(c, t)) == Some(port)),
            "{}",
            ctx(&format!(
                "Service {svc} does not map {port} to the container's {port}"
            ))
        );
    }
    let auth_svc = find(docs, "Service", AUTH).context("auth svc")?;
    ensure!(str_at(auth_svc, "/spec/ports/0/appProtocol") == Some("grpc"));
    for ing in docs.iter().filter(|d| kind(d) == "Ingress") {
        for path in ing
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|r| {
                r.pointer("/http/paths")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
        {
            let svc = str_at(path, "/backend/service/name").unwrap_or_default();
            let s = find(docs, "Service", svc)
                .with_context(|| ctx(&format!("Ingress → missing Service {svc}")))?;
            let port = path.pointer("/backend/service/port").context("port")?;
            let ok = s
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| {
                    port.get("name").is_some_and(|n| p.get("name") == Some(n))
                        || port.get("number").is_some_and(|n| p.get("port") == Some(n))
                });
            ensure!(
                ok,
                "{}",
                ctx(&format!("Ingress port {port} not on Service {svc}"))
            );
        }
        ensure!(
            ing.pointer("/spec/tls").is_some(),
            "{}",
            ctx("Ingress without TLS")
        );
    }

    // --- Disruption budgets and autoscaling --------------------------------------------------
    for target in [GATEWAY, AUTH] {
        let pdb = docs
            .iter()
            .filter(|d| kind(d) == "PodDisruptionBudget")
            .find(|d| {
                d.pointer("/spec/selector/matchLabels")
                    .is_some_and(|s| labels_match(s, &pods[target].0))
            })
            .with_context(|| ctx(&format!("no PodDisruptionBudget for {target}")))?;
        ensure!(str_at(pdb, "/apiVersion") == Some("policy/v1"));
        ensure!(
            pdb.pointer("/spec/minAvailable").is_some()
                || pdb.pointer("/spec/maxUnavailable").is_some(),
            "{}",
            ctx("PDB without a bound")
        );
    }
    let hpa = docs
        .iter()
        .find(|d| kind(d) == "HorizontalPodAutoscaler")
        .with_context(|| ctx("no HorizontalPodAutoscaler"))?;
    ensure!(str_at(hpa, "/apiVersion") == Some("autoscaling/v2"));
    ensure!(str_at(hpa, "/spec/scaleTargetRef/kind") == Some("Deployment"));
    ensure!(str_at(hpa, "/spec/scaleTargetRef/name") == Some(GATEWAY));
    let min = hpa
        .pointer("/spec/minReplicas")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let max = hpa
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    ensure!(
        min >= 2 && min <= max,
        "{}",
        ctx(&format!("HPA {min}..{max}"))
    );
    ensure!(
        hpa.pointer("/spec/metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|m| str_at(m, "/resource/name") == Some("cpu")),
        "{}",
        ctx("HPA without a CPU metric")
    );
    if find(docs, "Deployment", GATEWAY)
        .and_then(|d| d.pointer("/spec/replicas"))
        .is_some()
    {
        bail!(
            "{}",
            ctx("the gateway Deployment fixes replicas although the HPA owns them")
        );
    }
    Ok(())
}

#[test]
fn operator_notes_cover_nats_and_clickhouse() -> Result<()> {
    let notes = read(format!("{K8S}/README.md"))?.to_lowercase();
    for needle in [
        "helm",
        "jetstream",
        "filestore",
        "clickhouse",
        "operator",
        "workload identity",
        "livegate_gateway_sessions_active",
        "terminationgraceperiodseconds",
        "permissions.conf",
        "cert-manager",
        "livegate_nats_gateway_password",
    ] {
        assert!(
            notes.contains(needle),
            "deploy/k8s/README.md does not mention {needle}"
        );
    }
    Ok(())
}
