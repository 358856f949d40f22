//! docker-compose.yml against the contracts: services, builds, env var names and values,
//! ports, health checks, start order, volumes, and the scalable gateway behind the proxy.

use anyhow::{Context, Result, bail, ensure};
use livegate_deploy_tests::{
    compose_environment, dockerfile_stages, interpolate_value, known_env_vars, read, repo_root,
    str_at, yaml_document,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The services compose must define.
const SERVICES: &[&str] = &[
    "nats-tls",
    "nats",
    "clickhouse",
    "auth",
    "metering",
    "gateway",
    "proxy",
    "grafana",
    // Profile `clustered`: 3 NATS nodes, 2 ClickHouse replicas and their keeper.
    "nats-c1",
    "nats-c2",
    "nats-c3",
    "clickhouse-keeper",
    "clickhouse-r1",
    "clickhouse-r2",
];

/// (compose service, Dockerfile target, binary).
const LIVEGATE: &[(&str, &str, &str)] = &[
    ("auth", "auth", "livegate-auth"),
    ("metering", "metering", "livegate-metering"),
    ("gateway", "gateway", "livegate-gateway"),
];

/// Ports fixed by DESIGN.md (defaults of the listen variables) and the servers' own.
const GATEWAY_PORT: u16 = 4000;
const AUTH_PORT: u16 = 50051;
const METERING_PORT: u16 = 9464;
const NATS_PORT: u16 = 4222;
const NATS_MONITOR_PORT: u16 = 8222;
const CLICKHOUSE_HTTP_PORT: u16 = 8123;

/// Variables each livegate service must be given.
const REQUIRED_ENV: &[(&str, &[&str])] = &[
    (
        "gateway",
        &[
            "NATS_URL",
            "AUTH_URL",
            "GATEWAY_LISTEN",
            "LIVEGATE_INTERNAL_TOKEN",
            "DEFAULT_VERTEXAI_PROJECT",
            "DEFAULT_VERTEXAI_LOCATION",
            "LIVEGATE_LOG",
            "LIVEGATE_LOG_FORMAT",
        ],
    ),
    (
        "auth",
        &[
            "NATS_URL",
            "AUTH_LISTEN",
            "LIVEGATE_MASTER_KEY",
            "LIVEGATE_INTERNAL_TOKEN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "DEFAULT_VERTEXAI_PROJECT",
            "DEFAULT_VERTEXAI_LOCATION",
            "LIVEGATE_LOG",
            "LIVEGATE_LOG_FORMAT",
        ],
    ),
    (
        "metering",
        &[
            "NATS_URL",
            "METERING_LISTEN",
            "CLICKHOUSE_URL",
            "CLICKHOUSE_DATABASE",
            "CLICKHOUSE_USER",
            "CLICKHOUSE_PASSWORD",
            "LIVEGATE_LOG",
            "LIVEGATE_LOG_FORMAT",
        ],
    ),
];

/// Secrets compose must refuse to start without.
const REQUIRED_SECRETS: &[&str] = &[
    "LIVEGATE_MASTER_KEY",
    "LIVEGATE_INTERNAL_TOKEN",
    "CLICKHOUSE_PASSWORD",
    "LIVEGATE_NATS_GATEWAY_PASSWORD",
    "LIVEGATE_NATS_AUTH_PASSWORD",
    "LIVEGATE_NATS_METERING_PASSWORD",
    "LIVEGATE_NATS_CLI_PASSWORD",
    "LIVEGATE_NATS_ADMIN_PASSWORD",
];

/// One-shot services: they run to completion (no health check) before what depends on them.
const ONE_SHOT: &[&str] = &["nats-tls"];

/// (service, NATS user, the variable holding its password).
const NATS_USERS: &[(&str, &str, &str)] = &[
    ("gateway", "gateway", "LIVEGATE_NATS_GATEWAY_PASSWORD"),
    ("auth", "auth", "LIVEGATE_NATS_AUTH_PASSWORD"),
    ("metering", "metering", "LIVEGATE_NATS_METERING_PASSWORD"),
];

fn secrets_env() -> HashMap<String, String> {
    REQUIRED_SECRETS
        .iter()
        .map(|k| ((*k).to_string(), format!("test-{}", k.to_lowercase())))
        .collect()
}

fn raw() -> Result<Value> {
    yaml_document(&read("docker-compose.yml")?)
}

/// The file as compose sees it with the secrets set and everything else at its default.
fn compose() -> Result<Value> {
    interpolate_value(&raw()?, &secrets_env())
}

fn service<'a>(c: &'a Value, name: &str) -> Result<&'a Value> {
    c.pointer(&format!("/services/{name}"))
        .with_context(|| format!("service {name} missing"))
}

fn env_map(service: &Value) -> BTreeMap<String, String> {
    compose_environment(service).into_iter().collect()
}

fn port_of(addr: &str) -> Result<u16> {
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .with_context(|| format!("no port in {addr}"))?;
    port.parse()
        .with_context(|| format!("bad port in {addr:?}"))
}

/// `(host_ip, host_port, container_port)` of each published port (short syntax).
fn published(service: &Value) -> Result<Vec<(String, u16, u16)>> {
    let mut out = Vec::new();
    for p in service
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = p
            .as_str()
            .context("ports must use the short string syntax")?;
        let parts: Vec<&str> = s.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [ip, host, container] => ((*ip).to_string(), *host, *container),
            [host, container] => ("0.0.0.0".to_string(), *host, *container),
            _ => bail!("port {s:?} has no fixed host port"),
        };
        ensure!(
            !host.contains('-'),
            "host port range {host:?}: this file scales the gateway through the proxy"
        );
        out.push((ip, port_of(host)?, port_of(container)?));
    }
    Ok(out)
}

/// `(source, target, read_only)` of each short-syntax volume.
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    service
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            let ro = parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro"));
            (
                parts.first().copied().unwrap_or_default().to_string(),
                parts.get(1).copied().unwrap_or_default().to_string(),
                ro,
            )
        })
        .collect()
}

fn healthcheck_test(service: &Value) -> Result<Vec<String>> {
    let test = service
        .pointer("/healthcheck/test")
        .and_then(Value::as_array)
        .context("healthcheck.test must be a list (exec form)")?;
    ensure!(
        test.first().and_then(Value::as_str) == Some("CMD"),
        "healthcheck.test must start with CMD (exec form, no shell needed)"
    );
    Ok(test
        .iter()
        .skip(1)
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect())
}

#[test]
fn defines_the_documented_services() -> Result<()> {
    let c = compose()?;
    let names: BTreeSet<&str> = c
        .get("services")
        .and_then(Value::as_object)
        .context("no services")?
        .keys()
        .map(String::as_str)
        .collect();
    let wanted: BTreeSet<&str> = SERVICES.iter().copied().collect();
    assert_eq!(names, wanted);
    assert_eq!(str_at(&c, "/name"), Some("livegate"));
    Ok(())
}

#[test]
fn refuses_to_start_without_the_secrets() -> Result<()> {
    let raw = raw()?;
    assert!(
        interpolate_value(&raw, &secrets_env()).is_ok(),
        "with the secrets set, every interpolation resolves"
    );
    for missing in REQUIRED_SECRETS {
        for value in [None, Some("")] {
            let mut env = secrets_env();
            match value {
                None => env.remove(*missing),
                Some(v) => env.insert((*missing).to_string(), v.to_string()),
            };
            let err = interpolate_value(&raw, &env)
                .err()
                .with_context(|| format!("compose would start without {missing} ({value:?})"))?;
            let msg = format!("{err:#}");
            assert!(
                msg.contains(missing),
                "error for {missing} does not name it: {msg}"
            );
        }
    }
    // And the services read them from the environment, never from the file.
    for (svc, var) in [
        ("auth", "LIVEGATE_MASTER_KEY"),
        ("auth", "LIVEGATE_INTERNAL_TOKEN"),
        ("gateway", "LIVEGATE_INTERNAL_TOKEN"),
        ("metering", "CLICKHOUSE_PASSWORD"),
        ("nats", "LIVEGATE_NATS_GATEWAY_PASSWORD"),
        ("nats", "LIVEGATE_NATS_AUTH_PASSWORD"),
        ("nats", "LIVEGATE_NATS_METERING_PASSWORD"),
        ("nats", "LIVEGATE_NATS_CLI_PASSWORD"),
        ("nats", "LIVEGATE_NATS_ADMIN_PASSWORD"),
    ] {
        let v = env_map(service(&raw, svc)?)
            .remove(var)
            .with_context(|| format!("{svc}: {var} not set"))?;
        assert!(
            v.starts_with(&format!("${{{var}:?")),
            "{svc}: {var} must be `${{{var}:?message}}`, is {v:?}"
        );
    }
    Ok(())
}

#[test]
fn livegate_services_build_release_images_from_one_dockerfile() -> Result<()> {
    let c = compose()?;
    let mut dockerfiles = BTreeSet::new();
    for (svc, target, binary) in LIVEGATE {
        let s = service(&c, svc)?;
        let context = str_at(s, "/build/context").context("build.context")?;
        let dockerfile = str_at(s, "/build/dockerfile").context("build.dockerfile")?;
        assert_eq!(
            str_at(s, "/build/target"),
            Some(*target),
            "{svc}: build.target"
        );
        assert_eq!(
            repo_root().join(context).canonicalize()?,
            repo_root().canonicalize()?,
            "{svc}: the build context is the repository root"
        );
        let image = str_at(s, "/image").with_context(|| format!("{svc}: image name"))?;
        assert!(
            image.starts_with(&format!("{binary}:")),
            "{svc}: image {image}"
        );
        dockerfiles.insert(dockerfile.to_string());

        let text = read(std::path::Path::new(context).join(dockerfile))?;
        let stages = dockerfile_stages(&text);
        let stage = stages
            .iter()
            .find(|st| st.name.as_deref() == Some(*target))
            .with_context(|| format!("{svc}: no stage {target} in {dockerfile}"))?;
        let entrypoint = stage.args("ENTRYPOINT").last().unwrap_or_default();
        assert!(
            entrypoint.contains(&format!("\"{binary}\"")),
            "{svc}: stage {target} runs {entrypoint:?}, not {binary}"
        );
        // The binary is a [[bin]] of the workspace.
        let crate_dir = match *svc {
            "auth" => "services/auth",
            "metering" => "services/metering",
            _ => "services/gateway",
        };
        let manifest = read(format!("{crate_dir}/Cargo.toml"))?;
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{binary} is not a binary of {crate_dir}"
        );
    }
    assert_eq!(
        dockerfiles.len(),
        1,
        "one Dockerfile for all: {dockerfiles:?}"
    );
    Ok(())
}

#[test]
fn environment_names_and_values_follow_the_contract() -> Result<()> {
    let c = compose()?;
    let known = known_env_vars()?;
    for (svc, required) in REQUIRED_ENV {
        let env = env_map(service(&c, svc)?);
        for name in env.keys() {
            assert!(
                known.contains(name),
                "{svc}: {name} is not a variable livegate reads"
            );
        }
        for name in *required {
            assert!(env.contains_key(*name), "{svc}: {name} not set");
        }
        assert_eq!(env["NATS_URL"], format!("tls://nats:{NATS_PORT}"), "{svc}");
        assert_eq!(env["NATS_TLS_CA"], "/etc/nats/tls/ca.crt", "{svc}");
        assert!(
            mounts(service(&c, svc)?)
                .iter()
                .any(|(s, t, ro)| s == "nats-tls" && t == "/etc/nats/tls" && *ro),
            "{svc}: the NATS CA is mounted read-only"
        );
        assert_eq!(
            env["LIVEGATE_LOG_FORMAT"], "json",
            "{svc}: logs for collectors"
        );
    }
    let gateway = env_map(service(&c, "gateway")?);
    let auth = env_map(service(&c, "auth")?);
    let metering = env_map(service(&c, "metering")?);
    let clickhouse = env_map(service(&c, "clickhouse")?);

    assert_eq!(port_of(&gateway["GATEWAY_LISTEN"])?, GATEWAY_PORT);
    assert_eq!(port_of(&auth["AUTH_LISTEN"])?, AUTH_PORT);
    assert_eq!(port_of(&metering["METERING_LISTEN"])?, METERING_PORT);
    assert_eq!(gateway["AUTH_URL"], format!("http://auth:{AUTH_PORT}"));
    assert_eq!(
        metering["CLICKHOUSE_URL"],
        format!("http://clickhouse:{CLICKHOUSE_HTTP_PORT}")
    );
    assert_eq!(
        gateway["LIVEGATE_INTERNAL_TOKEN"], auth["LIVEGATE_INTERNAL_TOKEN"],
        "gateway and auth share the internal token"
    );
    assert_eq!(metering["CLICKHOUSE_DATABASE"], "livegate");
    assert_eq!(clickhouse["CLICKHOUSE_DB"], metering["CLICKHOUSE_DATABASE"]);
    assert_eq!(clickhouse["CLICKHOUSE_USER"], metering["CLICKHOUSE_USER"]);
    assert_eq!(
        clickhouse["CLICKHOUSE_PASSWORD"],
        metering["CLICKHOUSE_PASSWORD"]
    );
    assert_eq!(gateway["DEFAULT_VERTEXAI_LOCATION"], "us-central1");

    // Each service is its own NATS user, with the password nats-server reads for that user.
    let raw = raw()?;
    let nats_env = env_map(service(&raw, "nats")?);
    for (svc, user, var) in NATS_USERS {
        let env = env_map(service(&c, svc)?);
        assert_eq!(
            env.get("NATS_USER").map(String::as_str),
            Some(*user),
            "{svc}"
        );
        let own = env_map(service(&raw, svc)?)
            .remove("NATS_PASSWORD")
            .with_context(|| format!("{svc}: NATS_PASSWORD"))?;
        assert!(own.starts_with(&format!("${{{var}:?")), "{svc}: {own}");
        assert!(
            nats_env
                .get(*var)
                .is_some_and(|v| v.starts_with(&format!("${{{var}:?"))),
            "nats: {var}"
        );
    }

    // The ports agree with the services' own defaults (DESIGN.md's table).
    let src = |file: &str, konst: &str| -> Result<String> {
        read(file)?
            .lines()
            .find(|l| l.contains(&format!("pub const {konst}: &str = ")))
            .and_then(|l| l.split('"').nth(1))
            .map(str::to_string)
            .with_context(|| format!("{konst} in {file}"))
    };
    assert_eq!(
        port_of(&src("services/auth/src/config.rs", "DEFAULT_LISTEN")?)?,
        AUTH_PORT
    );
    assert_eq!(
        port_of(&src("services/metering/src/config.rs", "DEFAULT_LISTEN")?)?,
        METERING_PORT
    );
    assert_eq!(
        port_of(&src("proto/src/contract.rs", "DEFAULT_AUTH_URL")?)?,
        AUTH_PORT
    );
    assert_eq!(
        port_of(&src(
            "services/metering/src/config.rs",
            "DEFAULT_CLICKHOUSE_URL"
        )?)?,
        CLICKHOUSE_HTTP_PORT
    );
    assert_eq!(
        port_of(&src("services/common/src/env.rs", "DEFAULT_NATS_URL")?)?,
        NATS_PORT
    );
    assert!(
        read("services/gateway/src/config.rs")?.contains("[0, 0, 0, 0], 4000"),
        "the gateway's default port is {GATEWAY_PORT}"
    );
    Ok(())
}

#[test]
fn health_checks_gate_the_start_order() -> Result<()> {
    let c = compose()?;
    let mut edges: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in SERVICES {
        let s = service(&c, name)?;
        if ONE_SHOT.contains(name) {
            assert!(s.get("healthcheck").is_none(), "{name} runs once");
            assert_eq!(str_at(s, "/restart"), Some("no"), "{name} runs once");
        } else {
            let test = healthcheck_test(s).with_context(|| name.to_string())?;
            assert!(!test.is_empty(), "{name}: empty health check");
        }
        for (k, v) in s
            .get("depends_on")
            .map(|d| d.as_object().context("depends_on must use the long form"))
            .transpose()?
            .into_iter()
            .flatten()
        {
            let wanted = if ONE_SHOT.contains(&k.as_str()) {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            assert_eq!(str_at(v, "/condition"), Some(wanted), "{name} → {k}");
            assert!(
                SERVICES.contains(&k.as_str()),
                "{name} depends on unknown {k}"
            );
            edges.entry(name).or_default().push(k.clone());
        }
    }
    for (from, to) in [
        ("nats", "nats-tls"),
        ("auth", "nats"),
        ("metering", "nats"),
        ("metering", "clickhouse"),
        ("gateway", "nats"),
        ("gateway", "auth"),
        ("proxy", "gateway"),
        ("grafana", "clickhouse"),
    ] {
        assert!(
            edges.get(from).is_some_and(|d| d.iter().any(|x| x == to)),
            "{from} must wait for {to}"
        );
    }
    // No cycles: repeatedly remove services whose dependencies are all removed.
    let mut left: BTreeSet<&str> = SERVICES.iter().copied().collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .copied()
            .filter(|s| {
                edges
                    .get(s)
                    .is_none_or(|d| d.iter().all(|x| !left.contains(x.as_str())))
            })
            .collect();
        assert!(!ready.is_empty(), "dependency cycle among {left:?}");
        for r in ready {
            left.remove(r);
        }
    }

    // What each check probes.
    let nats = service(&c, "nats")?;
    let cmd: Vec<&str> = nats
        .get("command")
        .and_then(Value::as_array)
        .context("nats command")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(cmd.contains(&"-js"), "JetStream on: {cmd:?}");
    let conf = cmd.iter().position(|a| *a == "-c").context("nats -c")?;
    assert_eq!(cmd.get(conf + 1), Some(&"/etc/nats/nats.conf"));
    let m = cmd.iter().position(|a| *a == "-m").context("nats -m")?;
    assert_eq!(
        cmd.get(m + 1),
        Some(&NATS_MONITOR_PORT.to_string().as_str())
    );
    assert!(
        healthcheck_test(nats)?
            .iter()
            .any(|a| a.contains(&format!(":{NATS_MONITOR_PORT}/healthz")))
    );
    assert!(
        healthcheck_test(service(&c, "clickhouse")?)?
            .iter()
            .any(|a| a.contains(&format!(":{CLICKHOUSE_HTTP_PORT}/ping")))
    );
    assert_eq!(
        healthcheck_test(service(&c, "gateway")?)?,
        [
            "livegate-healthcheck",
            "http",
            &format!("http://127.0.0.1:{GATEWAY_PORT}/readyz")
        ]
    );
    assert_eq!(
        healthcheck_test(service(&c, "metering")?)?,
        [
            "livegate-healthcheck",
            "http",
            &format!("http://127.0.0.1:{METERING_PORT}/readyz")
        ]
    );
    assert_eq!(
        healthcheck_test(service(&c, "auth")?)?,
        [
            "livegate-healthcheck",
            "grpc",
            &format!("127.0.0.1:{AUTH_PORT}")
        ]
    );
    Ok(())
}

#[test]
fn state_persists_and_mounts_exist() -> Result<()> {
    let c = compose()?;
    let declared: BTreeSet<String> = c
        .get("volumes")
        .and_then(Value::as_object)
        .context("top-level volumes")?
        .keys()
        .cloned()
        .collect();
    for (svc, target) in [
        ("nats", "/data"),
        ("clickhouse", "/var/lib/clickhouse"),
        ("grafana", "/var/lib/grafana"),
    ] {
        let m = mounts(service(&c, svc)?);
        let (source, _, _) = m
            .iter()
            .find(|(_, t, _)| t == target)
            .with_context(|| format!("{svc}: nothing mounted at {target}"))?;
        assert!(
            declared.contains(source),
            "{svc}: {target} must be a named volume, is {source}"
        );
    }
    let nats_cmd = service(&c, "nats")?
        .get("command")
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(
        nats_cmd.contains("\"-sd\",\"/data\""),
        "JetStream stores in the volume"
    );

    // Every bind mount's source exists (with the defaults).
    for name in SERVICES {
        for (source, target, _) in mounts(service(&c, name)?) {
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    repo_root().join(&source).exists(),
                    "{name}: {source} (→ {target}) does not exist"
                );
            }
        }
    }

    // Google credentials: the host file, read-only, where the variable points.
    let auth = service(&c, "auth")?;
    let (source, _, ro) = mounts(auth)
        .into_iter()
        .find(|(_, t, _)| t == "/secrets/google.json")
        .context("auth: no credentials mount")?;
    assert!(ro, "credentials are mounted read-only");
    assert_eq!(source, "./deploy/credentials/none.json");
    assert_eq!(
        env_map(auth)["GOOGLE_APPLICATION_CREDENTIALS"],
        "/secrets/google.json"
    );
    let mut env = secrets_env();
    env.insert(
        "GOOGLE_APPLICATION_CREDENTIALS".into(),
        "/home/me/sa.json".into(),
    );
    let with_host_file = interpolate_value(&raw()?, &env)?;
    let auth = service(&with_host_file, "auth")?;
    assert!(
        mounts(auth)
            .iter()
            .any(|(s, t, _)| s == "/home/me/sa.json" && t == "/secrets/google.json")
    );
    assert_eq!(
        env_map(auth)["GOOGLE_APPLICATION_CREDENTIALS"],
        "/secrets/google.json",
        "the container sees the file at its mount point, not the host path"
    );
    env.insert("GOOGLE_CREDENTIALS_IN_CONTAINER".into(), String::new());
    let metadata = interpolate_value(&raw()?, &env)?;
    assert_eq!(
        env_map(service(&metadata, "auth")?)["GOOGLE_APPLICATION_CREDENTIALS"],
        "",
        "an empty GOOGLE_CREDENTIALS_IN_CONTAINER leaves auth on the metadata server"
    );
    let placeholder: Value = serde_json::from_str(&read("deploy/credentials/none.json")?)?;
    assert_eq!(str_at(&placeholder, "/type"), Some("none"));
    Ok(())
}

#[test]
fn the_gateway_scales_behind_the_proxy() -> Result<()> {
    let c = compose()?;
    let gateway = service(&c, "gateway")?;
    for fixed in ["ports", "container_name", "hostname"] {
        assert!(
            gateway.get(fixed).is_none(),
            "gateway: `{fixed}` would break --scale gateway=3"
        );
    }
    let expose: Vec<String> = gateway
        .get("expose")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect();
    assert!(expose.contains(&GATEWAY_PORT.to_string()), "{expose:?}");

    // Host ports: unique, the gateway's port on the proxy only, infrastructure on loopback.
    let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
    for name in SERVICES {
        for (ip, host, container) in published(service(&c, name)?)? {
            if let Some(other) = seen.insert(host, name) {
                bail!("host port {host} published by {other} and {name}");
            }
            match *name {
                "proxy" => {
                    assert_eq!((host, container), (GATEWAY_PORT, GATEWAY_PORT));
                }
                "auth" => assert_eq!(container, AUTH_PORT),
                "metering" => assert_eq!(container, METERING_PORT),
                "nats" => assert_eq!(container, NATS_PORT),
                "clickhouse" => assert_eq!(container, CLICKHOUSE_HTTP_PORT),
                "grafana" => assert_eq!(container, 3000),
                other => bail!("{other} publishes a port"),
            }
            if !matches!(*name, "proxy" | "grafana") {
                assert_eq!(ip, "127.0.0.1", "{name}: {host} only on loopback");
            }
        }
    }
    assert_eq!(seen.get(&GATEWAY_PORT), Some(&"proxy"));

    // The proxy balances WebSocket upgrades over every replica, re-resolving the name.
    let proxy = service(&c, "proxy")?;
    let (source, target, _) = mounts(proxy)
        .into_iter()
        .find(|(_, t, _)| t.ends_with(".conf"))
        .context("proxy: no config mounted")?;
    assert_eq!(target, "/etc/nginx/nginx.conf");
    let conf = read(&source)?;
    for needle in [
        "resolver 127.0.0.11",
        &format!("set $gateway_upstream http://gateway:{GATEWAY_PORT};"),
        "proxy_pass $gateway_upstream;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        &format!("listen {GATEWAY_PORT};"),
    ] {
        assert!(conf.contains(needle), "nginx.conf lacks `{needle}`");
    }
    let timeout: u64 = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("proxy_read_timeout "))
        .and_then(|v| v.trim_end_matches(';').trim_end_matches('s').parse().ok())
        .context("proxy_read_timeout")?;
    assert!(timeout > 3600, "sessions last up to an hour: {timeout}s");
    // Keys and browser tokens may ride in the query string: never log it.
    let log_format: String = conf
        .split("log_format")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .context("a log_format")?
        .to_string();
    for leak in [
        "$request ",
        "$request\"",
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
    ] {
        assert!(!log_format.contains(leak), "the access log records {leak}");
    }
    Ok(())
}

#[test]
fn images_are_pinned_and_registry_neutral() -> Result<()> {
    let c = compose()?;
    let image = |s: &str| -> Result<String> {
        str_at(service(&c, s)?, "/image")
            .map(str::to_string)
            .with_context(|| format!("{s}: image"))
    };
    for s in SERVICES {
        let img = image(s)?;
        let (name, tag) = img
            .rsplit_once(':')
            .with_context(|| format!("{s}: {img} has no tag"))?;
        assert!(tag != "latest" && !tag.is_empty(), "{s}: {img}");
        let first = name.split('/').next().unwrap_or_default();
        assert!(
            !(name.contains('/') && (first.contains('.') || first.contains(':'))),
            "{s}: {img} names a registry host"
        );
    }
    assert!(image("nats")?.starts_with("nats:2."));
    let ch = image("clickhouse")?;
    let major: u32 = ch
        .strip_prefix("clickhouse/clickhouse-server:")
        .and_then(|t| t.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("clickhouse image {ch}"))?;
    assert!(
        major >= 24,
        "DESIGN.md: compose runs ClickHouse 24.x+ ({ch})"
    );
    assert!(image("grafana")?.starts_with("grafana/grafana:"));
    Ok(())
}

#[test]
fn the_env_example_lists_the_required_secrets() -> Result<()> {
    let example = read("deploy/compose.env.example")?;
    for var in REQUIRED_SECRETS {
        assert!(
            example.lines().any(|l| l.trim() == format!("{var}=")),
            "deploy/compose.env.example: `{var}=` (empty, to fill in)"
        );
    }
    // Every variable compose interpolates is documented there.
    let text = read("docker-compose.yml")?;
    let mut vars = BTreeSet::new();
    for part in text.split("${").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        vars.insert(name);
    }
    for v in vars {
        assert!(
            example.contains(&v),
            "{v} is not documented in deploy/compose.env.example"
        );
    }
    Ok(())
}

#[test]
fn nats_runs_with_tls_and_the_shipped_permissions() -> Result<()> {
    let c = compose()?;
    let nats = service(&c, "nats")?;
    let m = mounts(nats);
    for (source, target) in [
        ("./deploy/nats/nats.conf", "/etc/nats/nats.conf"),
        (
            "./deploy/nats/permissions.conf",
            "/etc/nats/permissions.conf",
        ),
        ("nats-tls", "/etc/nats/tls"),
    ] {
        assert!(
            m.iter().any(|(s, t, ro)| s == source && t == target && *ro),
            "nats: {source} → {target} (read-only)"
        );
    }
    let conf = read("deploy/nats/nats.conf")?;
    for needle in [
        "include ./permissions.conf",
        "cert_file: \"/etc/nats/tls/tls.crt\"",
        "key_file: \"/etc/nats/tls/tls.key\"",
    ] {
        assert!(
            conf.contains(needle),
            "deploy/nats/nats.conf lacks `{needle}`"
        );
    }
    // Every password the permission file reads is one compose hands to nats-server.
    let permissions = read("deploy/nats/permissions.conf")?;
    let nats_env = env_map(nats);
    for var in REQUIRED_SECRETS
        .iter()
        .filter(|v| v.starts_with("LIVEGATE_NATS_"))
    {
        assert!(
            permissions.contains(&format!("${var}")),
            "permissions.conf: {var}"
        );
        assert!(nats_env.contains_key(*var), "nats: {var}");
    }
    // The one-shot certificate maker writes where nats reads, for the name clients dial.
    let tls = service(&c, "nats-tls")?;
    assert!(
        mounts(tls)
            .iter()
            .any(|(s, t, ro)| s == "nats-tls" && t == "/tls" && !*ro)
    );
    let cmd = tls.get("command").map(Value::to_string).unwrap_or_default();
    assert!(cmd.contains("gen-tls.sh /tls DNS:nats"), "nats-tls: {cmd}");
    Ok(())
}
