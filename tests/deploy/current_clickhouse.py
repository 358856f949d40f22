"""Metering's schema and the documented queries on current ClickHouse, in process (chdb).

Usage: python current_clickhouse.py SCHEMA_SQL QUERIES_JSON

SCHEMA_SQL is the output of `livegate-metering --print-schema --database livegate` (statements
each followed by `;` and a blank line). QUERIES_JSON is a list of {"label": ..., "sql": ...}:
the README's queries and every Grafana dashboard query, rendered for database `livegate`.

In a fresh chdb session (a temp dir) this script:
  1. checks the engine is ClickHouse 24 or later;
  2. applies every schema statement twice (they must be idempotent) and checks the tables
     and views they name exist, then does the bookkeeping metering does at start-up
     (records the version in schema_migrations, reads it back with FINAL);
  3. inserts usage_events rows (one event twice, as a redelivery would, in its own INSERT)
     and sessions rows with INSERT ... VALUES, and checks that spend_daily (fed by the
     materialized views) read with FINAL counts every event once, with exact Decimal sums
     (compared as strings);
  4. runs every query of QUERIES_JSON: each must execute without error.
It prints each check, and exits 1 (after trying everything) if any failed, naming the
statement and ClickHouse's error message.

Run by tests/deploy/tests/it/current_clickhouse.rs with the test venv's python (chdb
installed there by livegate_test_support::python::venv).
"""

import datetime
import json
import re
import sys
import tempfile
from decimal import Decimal

DB = "livegate"

failures = []
passed = 0


def ok(what):
    global passed
    passed += 1
    print(f"OK    {what}", flush=True)


def fail(what, detail):
    failures.append((what, detail))
    print(f"FAIL  {what}\n      {detail}", flush=True)


def first_line(sql, width=100):
    line = " ".join(sql.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    schema_text = open(sys.argv[1], encoding="utf-8").read()
    queries = json.load(open(sys.argv[2], encoding="utf-8"))
    statements = [s.strip() for s in schema_text.split(";\n\n")]
    statements = [s[:-1].rstrip() if s.endswith(";") else s for s in statements]
    statements = [s for s in statements if s]
    if not statements or not statements[0].startswith("CREATE DATABASE"):
        print(f"FATAL: {sys.argv[1]} does not look like --print-schema output", file=sys.stderr)
        return 2

    import chdb
    from chdb import session

    with tempfile.TemporaryDirectory(prefix="livegate-chdb-") as path:
        s = session.Session(path)
        try:
            run_checks(s, chdb, statements, queries)
        finally:
            s.close()

    print()
    print(f"current ClickHouse: {passed} checks OK, {len(failures)} failed")
    if failures:
        print("\nFailures:", file=sys.stderr)
        for what, detail in failures:
            print(f"- {what}\n  {detail.splitlines()[0] if detail else ''}", file=sys.stderr)
        return 1
    return 0


def run_checks(s, chdb, statements, queries):
    def q(sql):
        """Rows of `sql` as lists of strings (TabSeparated); raises on error."""
        out = str(s.query(sql, "TabSeparated"))
        return [line.split("\t") for line in out.splitlines()]

    def exec_(sql):
        s.query(sql, "TabSeparated")

    # 1. The engine.
    version = q("SELECT version()")[0][0]
    major = int(re.match(r"(\d+)", version).group(1))
    if major >= 24:
        ok(f"SELECT version() = {version} (chdb {chdb.__version__}): ClickHouse {major} >= 24")
    else:
        fail("SELECT version()", f"{version}: not a current ClickHouse (need >= 24)")

    # 2. The schema, twice. An ADD COLUMN runs once (ClickHouse 18.16 has no IF NOT EXISTS
    # for it; metering's runner checks system.columns instead): the second pass shows every
    # other statement is idempotent.
    for attempt in (1, 2):
        bad = 0
        for i, stmt in enumerate(statements, 1):
            if attempt == 2 and stmt.startswith("ALTER TABLE "):
                continue
            try:
                exec_(stmt)
            except Exception as e:  # chdb raises ChdbError with ClickHouse's message
                bad += 1
                fail(f"schema statement {i}/{len(statements)}, pass {attempt}: {first_line(stmt)}",
                     f"{e}\n      statement:\n{stmt}")
        if not bad:
            ok(f"schema pass {attempt}: all {len(statements)} statements applied")
    named = []
    for stmt in statements:
        m = re.match(r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS (\w+)\.(\w+)", stmt)
        if m:
            named.append(m.group(2))
        # A later migration may drop what an earlier one created.
        m = re.match(r"DROP TABLE IF EXISTS (\w+)\.(\w+)", stmt)
        if m and m.group(2) in named:
            named.remove(m.group(2))
    have = {r[0]: r[1] for r in q(
        f"SELECT name, engine FROM system.tables WHERE database = '{DB}' ORDER BY name")}
    missing = [n for n in named if n not in have]
    if missing or not named:
        fail("tables after migration", f"missing {missing}; present {have}")
    else:
        ok("tables and views exist: " + ", ".join(f"{n} ({have[n]})" for n in sorted(named)))
    engines = {n: have.get(n) for n in ("usage_events", "sessions", "spend_daily")}
    if all(e == "ReplacingMergeTree" for e in engines.values()):
        ok("usage_events, sessions, spend_daily are ReplacingMergeTree")
    else:
        fail("engines", f"{engines}")

    # What Store::migrate does around the statements: record the version, read it back.
    try:
        for _ in (1, 2):
            exec_(f"INSERT INTO {DB}.schema_migrations (version, name) "
                  "VALUES (1, 'usage_events, sessions, spend_daily')")
        rows = q(f"SELECT version FROM {DB}.schema_migrations FINAL")
        if rows == [["1"]]:
            ok("schema_migrations: version recorded twice, FINAL reads it once")
        else:
            fail("schema_migrations FINAL", f"got {rows}")
    except Exception as e:
        fail("schema_migrations bookkeeping", str(e))

    # 3. Rows as metering writes them, one INSERT per delivery (so the copies sit in separate
    # parts until a merge), an hour ago so the README's "today"/"last 24 h" queries see them.
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    at = now - datetime.timedelta(hours=1)
    if at.date() != now.date():
        at = now.replace(hour=0, minute=0, second=1)
    ts = at.strftime("%Y-%m-%d %H:%M:%S")
    started = (at - datetime.timedelta(seconds=60)).strftime("%Y-%m-%d %H:%M:%S")
    flash = "gemini-live-2.5-flash"
    # (event_id, session_id, seq, key, team, model, priced, input, output, prompt, response)
    events = [
        ("s1:1", "s1", 1, "k1", "t1", flash, 1, "0.000100000000", "0.000023456789", 120, 30),
        ("s1:2", "s1", 2, "k1", "t1", flash, 1, "0.100000000001", "0.200000000002", 240, 60),
        # Redelivered: s1:1 again, a second INSERT. FINAL must count it once.
        ("s1:1", "s1", 1, "k1", "t1", flash, 1, "0.000100000000", "0.000023456789", 120, 30),
        ("s2:1", "s2", 1, "k2", "t2", "mystery-live-model", 0, "0", "0", 50, 5),
    ]
    inserted = 0
    for (eid, sid, seq, key, team, model, priced, inp, out, prompt, resp) in events:
        cost = Decimal(inp) + Decimal(out)
        sql = (
            f"INSERT INTO {DB}.usage_events (event_id, session_id, seq, ts, key_id, team_id, "
            "user_id, project, location, model, gateway_id, prompt_tokens, response_tokens, "
            "cached_tokens, total_tokens, input_text_tokens, input_audio_tokens, "
            "output_audio_tokens, input_characters, input_audio_seconds, output_audio_seconds, "
            "input_text_cost_usd, input_audio_cost_usd, output_audio_cost_usd, input_cost_usd, "
            "output_cost_usd, cost_usd, priced, pricing_entry) VALUES "
            f"('{eid}', '{sid}', {seq}, '{ts}', '{key}', '{team}', 'u1', 'proj', 'us-central1', "
            f"'{model}', 'gw-1', {prompt}, {resp}, 10, {prompt + resp}, 20, {prompt - 20}, "
            f"{resp}, 80, 3.2, 1.5, 0, {inp}, {out}, {inp}, {out}, {cost}, {priced}, "
            f"'{model if priced else ''}')"
        )
        try:
            exec_(sql)
            inserted += 1
        except Exception as e:
            fail(f"INSERT usage_events {eid}", f"{e}\n      statement:\n{sql}")
    sessions = [
        # (session, key, team, model, close code, input, output)
        ("s1", "k1", "t1", flash, 1000, "0.100100000001", "0.200023456791"),
        ("s2", "k2", "t2", "mystery-live-model", 4402, "0", "0"),
    ]
    for (sid, key, team, model, code, inp, out) in sessions:
        cost = Decimal(inp) + Decimal(out)
        sql = (
            f"INSERT INTO {DB}.sessions (session_id, key_id, team_id, user_id, project, "
            "location, model, gateway_id, started_at, ended_at, duration_s, close_code, "
            "close_reason, closed_by, frames_in, frames_out, bytes_in, bytes_out, reports, "
            "events_counted, prompt_tokens, response_tokens, input_cost_usd, output_cost_usd, "
            f"cost_usd, version) VALUES ('{sid}', '{key}', '{team}', 'u1', 'proj', "
            f"'us-central1', '{model}', 'gw-1', '{started}', '{ts}', 60.5, {code}, '', "
            f"'client', 10, 12, 1000, 2000, 2, 2, 360, 90, {inp}, {out}, {cost}, 2)"
        )
        try:
            exec_(sql)
            inserted += 1
        except Exception as e:
            fail(f"INSERT sessions {sid}", f"{e}\n      statement:\n{sql}")
    if inserted == len(events) + len(sessions):
        ok(f"INSERT ... VALUES: {len(events)} usage_events rows (s1:1 twice, separate "
           f"inserts) and {len(sessions)} sessions rows")

    # Expected figures, from distinct events (Decimal arithmetic, no floats).
    distinct = {e[0]: e for e in events}
    def expect(key):
        evs = [e for e in distinct.values() if e[3] == key]
        return {
            "rows": len(evs) + 1,  # + the session's row from spend_daily_sessions_by_start_mv
            "sessions": 1,
            "prompt": sum(e[9] for e in evs),
            "input": sum((Decimal(e[7]) for e in evs), Decimal(0)),
            "output": sum((Decimal(e[8]) for e in evs), Decimal(0)),
        }

    def text(d):
        """A Decimal as ClickHouse prints one (no exponent, no trailing zeros)."""
        t = format(d, "f")
        if "." in t:
            t = t.rstrip("0").rstrip(".")
        return t or "0"

    try:
        raw = int(q(f"SELECT count() FROM {DB}.spend_daily")[0][0])
        final = int(q(f"SELECT count() FROM {DB}.spend_daily FINAL")[0][0])
        print(f"      spend_daily: {raw} rows on disk, {final} with FINAL")
        got = q(
            "SELECT key_id, count(), sum(sessions), sum(prompt_tokens), "
            "toString(sum(input_cost_usd)), toString(sum(output_cost_usd)), "
            f"toString(sum(cost_usd)) FROM {DB}.spend_daily FINAL "
            "GROUP BY key_id ORDER BY key_id"
        )
        want = []
        for key in ("k1", "k2"):
            e = expect(key)
            want.append([key, str(e["rows"]), str(e["sessions"]), str(e["prompt"]),
                         text(e["input"]), text(e["output"]), text(e["input"] + e["output"])])
        if got == want:
            ok("spend_daily FINAL per key (rows, sessions, prompt tokens, input/output/total "
               f"USD as strings): {got}")
        else:
            fail("spend_daily FINAL per key", f"got  {got}\n      want {want}")
        if raw >= final == sum(expect(k)["rows"] for k in ("k1", "k2")):
            ok(f"spend_daily: every event once with FINAL ({final} rows; {raw} on disk)")
        else:
            fail("spend_daily row counts", f"{raw} on disk, {final} with FINAL")
        ue = q(f"SELECT count(), toString(sum(cost_usd)) FROM {DB}.usage_events FINAL "
               "WHERE session_id = 's1'")
        want_ue = [["2", text(expect("k1")["input"] + expect("k1")["output"])]]
        if ue == want_ue:
            ok(f"usage_events FINAL for s1: {ue[0][0]} events, {ue[0][1]} USD")
        else:
            fail("usage_events FINAL for s1", f"got {ue}, want {want_ue}")
        se = q(f"SELECT session_id, toString(cost_usd) FROM {DB}.sessions FINAL "
               "ORDER BY session_id")
        want_se = [[sid, text(Decimal(i) + Decimal(o))] for (sid, _, _, _, _, i, o) in sessions]
        if se == want_se:
            ok(f"sessions FINAL: {se}")
        else:
            fail("sessions FINAL", f"got {se}, want {want_se}")
    except Exception as e:
        fail("reading spend_daily / usage_events / sessions", str(e))

    # 4. Every documented query.
    for item in queries:
        label, sql = item["label"], item["sql"]
        try:
            rows = q(sql)
            ok(f"{label}: {len(rows)} row(s)")
        except Exception as e:
            fail(label, f"{e}\n      query:\n{sql}")


if __name__ == "__main__":
    sys.exit(main())
