//! `livegate doctor`: checks a deployment's wiring and prints one line per check, with a fix
//! for each failure. Exits non-zero when any check fails; warnings (a degraded cluster, dead
//! letters, lost sessions) keep exit 0.
//!
//! The cluster checks (replicas of each stream, `CLICKHOUSE_CLUSTER`'s replicated tables) live
//! in [`cluster`].

mod cluster;
#[cfg(test)]
mod tests;

use crate::auth_client::AuthClient;
use crate::spend::ClickHouseArgs;
use clap::Args as ClapArgs;
use livegate_common::env::ProcessEnv;
use livegate_common::nats::{NatsOptions, Role};
use livegate_common::subjects;
use std::io::Write;
use std::time::Duration;

/// `livegate doctor`
#[derive(Debug, ClapArgs)]
pub struct DoctorArgs {
    /// NATS URL (several comma-separated). Credentials and TLS come from NATS_CREDS,
    /// NATS_USER/NATS_PASSWORD, NATS_NKEY and NATS_TLS_CA/_CERT/_KEY, as for the services.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Internal token, to ask auth which Google credentials it uses.
    #[arg(long, env = "LIVEGATE_INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: Option<String>,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// ClickHouse cluster the schema is laid out on (as metering's CLICKHOUSE_CLUSTER): adds
    /// the cluster's definition and its replicated tables' health to the checks.
    #[arg(long, env = "CLICKHOUSE_CLUSTER")]
    clickhouse_cluster: Option<String>,
}

/// The result of one check.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok(String),
    Warn(String, &'static str),
    Fail(String, &'static str),
}

struct Report<'a> {
    out: &'a mut dyn Write,
    failures: usize,
}

impl Report<'_> {
    fn line(&mut self, name: &str, outcome: Outcome) -> std::io::Result<()> {
        match outcome {
            Outcome::Ok(detail) => writeln!(self.out, "ok    {name:<22} {detail}"),
            Outcome::Warn(detail, fix) => writeln!(self.out, "warn  {name:<22} {detail} — {fix}"),
            Outcome::Fail(detail, fix) => {
                self.failures += 1;
                writeln!(self.out, "FAIL  {name:<22} {detail} — fix: {fix}")
            }
        }
    }
}

async fn timed<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 5 s".to_string()),
    }
}

pub(crate) async fn run_doctor(
    a: DoctorArgs,
    auth: &AuthClient,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut r = Report { out, failures: 0 };
    Box::pin(check_nats(&a, &mut r)).await?;
    check_clickhouse(&a, &mut r).await?;
    check_auth(&a, auth, &mut r).await?;
    if r.failures > 0 {
        anyhow::bail!("{} check(s) failed", r.failures);
    }
    Ok(())
}

async fn check_nats(a: &DoctorArgs, r: &mut Report<'_>) -> anyhow::Result<()> {
    let options = match NatsOptions::from_env(&ProcessEnv) {
        Ok(o) => o.with_servers(&a.nats_url),
        Err(e) => {
            r.line(
                "NATS",
                Outcome::Fail(
                    e.to_string(),
                    "fix the NATS_* variables (see the README's bus section)",
                ),
            )?;
            return Ok(());
        }
    };
    let shown = options.servers_for_log();
    // Boxed: the client's connect future is tens of KiB.
    let connect = Box::pin(options.connect(async_nats::ConnectOptions::new(), Role::Cli, "doctor"));
    let client = match timed(connect).await {
        Ok(c) => {
            let v = c.server_info().version;
            r.line("NATS", Outcome::Ok(format!("{shown} (server {v})")))?;
            c
        }
        Err(e) => {
            r.line(
                "NATS",
                Outcome::Fail(
                    e,
                    "start nats-server with -js, set NATS_URL and the cli user's NATS_USER/NATS_PASSWORD",
                ),
            )?;
            return Ok(());
        }
    };
    let js = async_nats::jetstream::new(client);
    match timed(js.query_account()).await {
        Ok(_) => r.line("JetStream", Outcome::Ok("enabled".into()))?,
        Err(e) => {
            r.line(
                "JetStream",
                Outcome::Fail(e, "run nats-server with -js (JetStream)"),
            )?;
            return Ok(());
        }
    }
    match timed(js.get_stream(subjects::STREAM)).await {
        Ok(mut stream) => {
            let info = timed(stream.info()).await;
            match info {
                Ok(i) => {
                    let window = i.config.duplicate_window;
                    let detail = format!(
                        "{} messages, duplicate window {}s",
                        i.state.messages,
                        window.as_secs()
                    );
                    if window < subjects::DUPLICATE_WINDOW {
                        r.line(
                            "stream LIVEGATE_USAGE",
                            Outcome::Warn(
                                detail,
                                "duplicate window under 2 min; metering widens it at start",
                            ),
                        )?;
                    } else {
                        r.line("stream LIVEGATE_USAGE", Outcome::Ok(detail))?;
                    }
                }
                Err(e) => r.line(
                    "stream LIVEGATE_USAGE",
                    Outcome::Fail(e, "check JetStream permissions"),
                )?,
            }
            match timed(
                stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    subjects::METERING_CONSUMER,
                ),
            )
            .await
            {
                Ok(mut c) => match timed(c.info()).await {
                    Ok(i) => r.line(
                        "consumer livegate-metering",
                        Outcome::Ok(format!(
                            "{} pending, {} awaiting ack",
                            i.num_pending, i.num_ack_pending
                        )),
                    )?,
                    Err(e) => r.line(
                        "consumer livegate-metering",
                        Outcome::Fail(e, "check JetStream permissions"),
                    )?,
                },
                Err(_) => r.line(
                    "consumer livegate-metering",
                    Outcome::Fail(
                        "missing".into(),
                        "start livegate-metering (it creates the durable consumer)",
                    ),
                )?,
            }
        }
        Err(_) => r.line(
            "stream LIVEGATE_USAGE",
            Outcome::Fail(
                "missing".into(),
                "start livegate-metering or a gateway (either creates it)",
            ),
        )?,
    }
    // Messages metering set aside: each is usage that is not in ClickHouse yet.
    let name = format!("stream {}", subjects::DEAD_LETTER_STREAM);
    match timed(js.get_stream(subjects::DEAD_LETTER_STREAM)).await {
        Ok(mut stream) => match timed(stream.info()).await {
            Ok(i) if i.state.messages == 0 => r.line(&name, Outcome::Ok("empty".into()))?,
            Ok(i) => r.line(
                &name,
                Outcome::Warn(
                    format!("{} dead letters", i.state.messages),
                    "messages metering could not use: read them with `nats stream view LIVEGATE_DEADLETTER` (each has a Livegate-Reason header)",
                ),
            )?,
            Err(e) => r.line(&name, Outcome::Fail(e, "check JetStream permissions"))?,
        },
        Err(_) => r.line(
            &name,
            Outcome::Ok("not created yet (metering creates it at start)".into()),
        )?,
    }
    for bucket in [subjects::KEYS_BUCKET, subjects::SPEND_BUCKET] {
        let name = format!("KV {bucket}");
        match timed(js.get_key_value(bucket)).await {
            Ok(_) => r.line(&name, Outcome::Ok("present".into()))?,
            Err(_) => r.line(
                &name,
                Outcome::Fail(
                    "missing".into(),
                    "start livegate-auth (it creates both buckets)",
                ),
            )?,
        }
    }
    cluster::check_stream_replicas(&js, options.layout().replicas, r).await?;
    check_stream_capacity(&js, options.layout(), r).await
}

/// The usage stream's replicas and byte limit against `LIVEGATE_STREAM_*`, and how much of
/// the limit events metering has not consumed take (past it the oldest go unbilled).
async fn check_stream_capacity(
    js: &async_nats::jetstream::Context,
    layout: &livegate_common::stream::StreamLayout,
    r: &mut Report<'_>,
) -> anyhow::Result<()> {
    let name = "stream capacity";
    let fill = match timed(livegate_common::stream::stream_fill(
        js,
        subjects::STREAM,
        subjects::METERING_CONSUMER,
    ))
    .await
    {
        Ok(f) => f,
        // Missing stream or consumer: reported above.
        Err(_) => return Ok(()),
    };
    let replicas = match timed(js.get_stream(subjects::STREAM)).await {
        Ok(mut s) => timed(s.info())
            .await
            .map(|i| i.config.num_replicas.max(1))
            .unwrap_or(0),
        Err(_) => 0,
    };
    let detail = format!(
        "{} replica(s), {} of {} bytes, {:.0} % of the limit not consumed yet",
        replicas,
        fill.bytes,
        fill.max_bytes,
        fill.unconsumed_ratio() * 100.0
    );
    if let Some(w) = fill.warning() {
        r.line(
            name,
            Outcome::Warn(
                w,
                "metering is behind: check its logs and ClickHouse, or raise LIVEGATE_STREAM_MAX_BYTES",
            ),
        )?;
    } else if fill.max_bytes <= 0 {
        r.line(
            name,
            Outcome::Warn(
                detail,
                "no byte limit: the JetStream store can fill up; start metering or a gateway of this version (they set LIVEGATE_STREAM_MAX_BYTES)",
            ),
        )?;
    } else if replicas != 0 && replicas < layout.replicas {
        r.line(
            name,
            Outcome::Warn(
                detail,
                "fewer replicas than LIVEGATE_STREAM_REPLICAS: metering and the gateway raise them at start",
            ),
        )?;
    } else {
        r.line(name, Outcome::Ok(detail))?;
    }
    Ok(())
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Version {
    version: u32,
}

async fn check_clickhouse(a: &DoctorArgs, r: &mut Report<'_>) -> anyhow::Result<()> {
    let ch = &a.clickhouse;
    let db = &ch.clickhouse_database;
    let client = ch.client();
    match timed(client.query("SELECT version() AS v").fetch_one::<String>()).await {
        Ok(v) => r.line(
            "ClickHouse",
            Outcome::Ok(format!("{} (server {v})", ch.clickhouse_url)),
        )?,
        Err(e) => {
            r.line(
                "ClickHouse",
                Outcome::Fail(
                    format!("{}: {e}", ch.clickhouse_url),
                    "start ClickHouse and set CLICKHOUSE_URL / _USER / _PASSWORD",
                ),
            )?;
            return Ok(());
        }
    }
    // An empty CLICKHOUSE_CLUSTER means one server, as for metering.
    let cluster = a.clickhouse_cluster.as_deref().map(str::trim);
    if let Some(cluster) = cluster.filter(|c| !c.is_empty()) {
        cluster::check_clickhouse_cluster(&client, db, cluster, r).await?;
    }
    if !livegate_common::clickhouse::is_identifier(db) {
        r.line(
            "ClickHouse schema",
            Outcome::Fail(
                format!("database {db:?}"),
                "CLICKHOUSE_DATABASE must be a plain identifier",
            ),
        )?;
        return Ok(());
    }
    let sql = format!("SELECT max(version) AS version FROM {db}.schema_migrations");
    match timed(client.query(&sql).fetch_one::<Version>()).await {
        Ok(v) if v.version > 0 => {
            r.line(
                "ClickHouse schema",
                Outcome::Ok(format!("database {db}, schema version {}", v.version)),
            )?;
            if v.version >= LEASES_SCHEMA {
                check_sessions(&client, db, r).await?;
            }
        }
        Ok(_) | Err(_) => r.line(
            "ClickHouse schema",
            Outcome::Fail(
                format!("database {db} has no applied migrations"),
                "start livegate-metering (it applies the schema at start-up)",
            ),
        )?,
    }
    Ok(())
}

/// The schema version that records session starts (migration 2), which the open-session count
/// reads.
const LEASES_SCHEMA: u32 = 2;

#[derive(clickhouse::Row, serde::Deserialize)]
struct SessionCounts {
    open: u64,
    lost: u64,
}

/// Sessions open now (started in the last day, no `sessions` row yet) and sessions closed as
/// lost in the last day (their gateway died; metering's lease reconciler closed them).
async fn check_sessions(
    client: &clickhouse::Client,
    db: &str,
    r: &mut Report<'_>,
) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT \
           (SELECT count() FROM {db}.session_starts FINAL WHERE started_at > now() - 86400 \
            AND session_id NOT IN (SELECT session_id FROM {db}.sessions FINAL \
            WHERE ended_at > now() - 172800)) AS open, \
           (SELECT count() FROM {db}.sessions FINAL WHERE closed_by = 'lost' \
            AND ended_at > now() - 86400) AS lost"
    );
    match timed(client.query(&sql).fetch_one::<SessionCounts>()).await {
        Ok(c) if c.lost == 0 => r.line(
            "sessions",
            Outcome::Ok(format!("{} open, none lost in the last 24 h", c.open)),
        )?,
        Ok(c) => r.line(
            "sessions",
            Outcome::Warn(
                format!("{} open, {} lost in the last 24 h", c.open, c.lost),
                "a gateway process died with sessions open (its lease expired; metering billed them as closed_by='lost'): check the gateways' restarts and OOM kills",
            ),
        )?,
        Err(e) => r.line(
            "sessions",
            Outcome::Fail(e, "check the ClickHouse user's SELECT grants"),
        )?,
    }
    Ok(())
}

async fn check_auth(a: &DoctorArgs, auth: &AuthClient, r: &mut Report<'_>) -> anyhow::Result<()> {
    if !auth.ready().await {
        r.line(
            "auth",
            Outcome::Fail(
                format!("{} not serving", auth.url()),
                "start livegate-auth and set AUTH_URL",
            ),
        )?;
        return Ok(());
    }
    r.line("auth", Outcome::Ok(format!("{} serving", auth.url())))?;
    match auth.check_master().await {
        Some(Ok(n)) => r.line(
            "master key",
            Outcome::Ok(format!("accepted ({n} live keys)")),
        )?,
        Some(Err(e)) => r.line(
            "master key",
            Outcome::Fail(e, "set LIVEGATE_MASTER_KEY to auth's master key"),
        )?,
        None => r.line(
            "master key",
            Outcome::Warn(
                "not set".into(),
                "set LIVEGATE_MASTER_KEY to check admin access",
            ),
        )?,
    }
    match &a.internal_token {
        None => r.line(
            "Google credentials",
            Outcome::Warn("not checked".into(), "set LIVEGATE_INTERNAL_TOKEN to ask auth for a token"),
        )?,
        Some(t) => match auth.google_source(t).await {
            Ok(source) => r.line("Google credentials", Outcome::Ok(format!("token minted from {source}")))?,
            Err(e) => r.line(
                "Google credentials",
                Outcome::Fail(e, "set DEFAULT_GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_APPLICATION_CREDENTIALS for auth, or use workload identity"),
            )?,
        },
    }
    Ok(())
}
