#!/usr/bin/env python3
"""Renders every measured figure in README.md and docs/ from the raw data
committed under bench/results/, which the scripts that measured wrote:

  bench/results/latest.jsonl       bench/compare.sh (natter and InspIRCd side by side)
  bench/results/ab.jsonl           bench/ab.sh (natter settings A/B, one rate each)
  bench/results/criterion.jsonl    bench/criterion.sh (criterion micro-benchmarks)
  bench/results/reliability.jsonl  bench/reliability.sh (fault and shutdown tests)
  bench/results/fuzz-ci.jsonl      FUZZ_RESULTS=... bash .ci/fuzz.sh (fuzz smoke runs)
  bench/results/store.jsonl        bench/store.sh (the store's criterion bench)
  bench/results/store_ab.jsonl     bench/store_ab.sh (fan-out, --ephemeral against durable)
  bench/results/cluster.jsonl      bench/cluster.sh (a cluster node against the single server)
  bench/results/metrics_ab.jsonl   bench/metrics_ab.sh (fan-out, without metrics against with)
  bench/results/identity.jsonl     bench/identity.sh (TLS fan-out, login storm, idle TLS)
  bench/results/idle.jsonl         bench/idle.sh (idle connections, with and without presence-scope)

A figure lives between <!-- figures:NAME --> and <!-- /figures:NAME -->;
this script owns what is in between.

  python3 bench/render.py           rewrite the blocks from the data
  python3 bench/render.py --check   fail if a block differs from what the data
                                    gives, or if a measured-looking figure
                                    (a decimal with a unit, µs, ns, %, an
                                    execution count) stands outside a block

tests/docs_figures.rs runs the check. --root DIR works on another tree.
"""
import argparse
import glob
import json
import os
import re
import sys

BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.S)


def read_jsonl(root, name):
    path = os.path.join(root, "bench/results", name)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def split_compare(lines):
    runs = [r for r in lines if not r.get("failed")]
    return runs, [r for r in lines if r.get("failed")]


def provenance(run, source):
    """One line: which file, written by what, at which commit and when."""
    if not run:
        return f"*Data: `{source}`; the command and commit of this run were not recorded.*\n"
    dirty = " plus uncommitted changes" if run.get("dirty") else ""
    load = run.get("loadavg_at_start")
    load = f", load average at start {' '.join(load)}" if load else ""
    return (f"*Data: `{source}`, written by `{run['command']}` at commit "
            f"`{run['commit'][:10]}`{dirty} on {run['date'][:10]}{load}.*\n")


def run_record(lines):
    return next((r["run"] for r in lines if "run" in r), None)


def ms(us):
    return f"{us / 1000:.2f}"


def holds(r):
    return r["delivery_ratio"] >= 0.99 and r["latency_us"]["p99"] <= 50_000


def render(runs, failed):
    out = []
    run = next((r["result"] for r in runs if r["server"] == "run"), None)
    out.append(provenance(run, "bench/results/latest.jsonl"))
    machine = next((r["result"] for r in runs if r["server"] == "machine"), None)
    floors = {r["result"]["rate"]: r["result"] for r in runs if r["server"] == "floor"}
    loads = [r for r in runs if r["server"] in ("natter", "inspircd") and r["result"]["mode"] == "load"]
    idles = [r for r in runs if r["server"] in ("natter", "inspircd") and r["result"]["mode"] == "idle"]
    long_runs = [r for r in loads if r["server"] == "natter" and r["result"]["duration_s"] >= 60]
    sweep = [r for r in loads if r not in long_runs]

    if machine:
        out.append(f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}; "
                   f"load average at start {' '.join(machine['loadavg_at_start'])}; {machine['inspircd']}.\n")

    def floor_for(r):
        deliveries = r["rate"] * (r["group"] - 1)
        return floors.get(deliveries)

    out.append("### Fan-out: C = {clients}, K = {group}, B = {payload} bytes, {duration:g} s window after {warmup:g} s warm-up\n".format(
        clients=sweep[0]["result"]["clients"], group=sweep[0]["result"]["group"],
        payload=sweep[0]["result"]["payload"], duration=sweep[0]["result"]["duration_s"],
        warmup=sweep[0]["result"]["warmup_s"]) if sweep else "### Fan-out\n")
    out.append("| server | R msg/s | delivered | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms "
               "| server cores | µs CPU / delivery | × floor | generator lateness p99 ms | generator cores |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in sorted(sweep, key=lambda r: (r["result"]["rate"], r["server"])):
        r = run["result"]
        server = r.get("server") or {}
        floor = floor_for(r)
        per = server.get("cpu_us_per_delivery")
        ratio = f"{per / floor['us_per_send']:.2f}" if per and floor else "–"
        out.append(f"| {run['server']} | {r['rate']} | {100 * r['delivery_ratio']:.2f}% | {r['delivered_per_s']:.0f} "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} | {ms(r['latency_us']['p999'])} "
                   f"| {ms(r['latency_us']['max'])} | {server.get('cpu_cores', '–')} | {per if per is not None else '–'} "
                   f"| {ratio} | {ms(r['lateness_us']['p99'])} | {(r.get('generator') or {}).get('cpu_cores', '–')} |")
    for f in failed:
        out.append(f"| {f['server']} | run failed: `{f['args']}` | | | | | | | | | | | |")
    out.append("")

    if floors:
        out.append("### The floor: one 64-byte `send()` per delivery (bench/floor.c)\n")
        out.append("| sends/s | sockets | µs sender CPU per send | sender cores |")
        out.append("|---:|---:|---:|---:|")
        for rate, f in sorted(floors.items()):
            out.append(f"| {rate} | {f['sockets']} | {f['us_per_send']} | {f['sender_cores']} |")
        out.append("")

    if idles:
        out.append("### Idle registered connections\n")
        out.append("| server | clients | setup s | server RSS before → held (KiB) | RSS per connection |")
        out.append("|---|---:|---:|---:|---:|")
        for run in idles:
            r = run["result"]
            s = r["server"]
            per = s.get("rss_bytes_per_connection")
            out.append(f"| {run['server']} | {r['clients']} | {r['setup_s']} | {s.get('rss_kib_before')} → {s.get('rss_kib_held')} "
                       f"| {per / 1024:.2f} KiB |" if per is not None else "| – |")
        out.append("")

    if long_runs:
        r = long_runs[-1]["result"]
        s = r["server"] or {}
        out.append(f"### Memory under traffic: natter, R = {r['rate']}, {r['duration_s']:g} s\n")
        out.append(f"RSS 10 s into the window {s.get('rss_kib_10s')} KiB, at the end {s.get('rss_kib_end')} KiB; "
                   f"{100 * r['delivery_ratio']:.2f}% delivered, p99 {ms(r['latency_us']['p99'])} ms, "
                   f"{s.get('cpu_us_per_delivery')} µs CPU per delivery.\n")

    out.append("### Targets, checked against this run\n")
    out.extend(verdicts(sweep, floors, idles, long_runs, floor_for))
    return "\n".join(out)


def verdicts(sweep, floors, idles, long_runs, floor_for):
    lines = []

    def at(server, rate):
        return next((r["result"] for r in sweep if r["server"] == server and r["result"]["rate"] == rate), None)

    def mark(ok):
        return "✅" if ok else "❌"

    def cpu(r):
        return ((r or {}).get("server") or {}).get("cpu_us_per_delivery")

    n10, i10 = at("natter", 10000), at("inspircd", 10000)
    if n10:
        floor = floor_for(n10)
        checks = [
            ("100% delivered", n10["delivery_ratio"] >= 1.0, f"{100 * n10['delivery_ratio']:.3f}%"),
            ("CPU/delivery ≤ InspIRCd's", i10 is not None and cpu(n10) <= cpu(i10), f"{cpu(n10)} vs {cpu(i10)} µs"),
            ("CPU/delivery ≤ 1.2 × floor", floor is not None and cpu(n10) <= 1.2 * floor["us_per_send"],
             f"{cpu(n10)} vs {floor['us_per_send'] if floor else '–'} µs ({cpu(n10) / floor['us_per_send']:.2f}×)" if floor else "no floor"),
            ("p50 ≤ 0.3 ms", n10["latency_us"]["p50"] <= 300, f"{ms(n10['latency_us']['p50'])} ms"),
        ]
        for name, ok, detail in checks:
            lines.append(f"- R = 10,000: {name}: {mark(ok)} {detail}")
    n20, i20 = at("natter", 20000), at("inspircd", 20000)
    if n20 and n10:
        lines.append(f"- R = 20,000: natter CPU/delivery below its own at 10,000: {mark(cpu(n20) < cpu(n10))} {cpu(n20)} vs {cpu(n10)} µs")
        if i20:
            lines.append(f"- R = 20,000: CPU/delivery ≤ 0.8 × InspIRCd's (issue 14): {mark(cpu(n20) <= 0.8 * cpu(i20))} "
                         f"{cpu(n20)} vs {cpu(i20)} µs ({cpu(n20) / cpu(i20):.2f}×)")
            lines.append(f"- R = 20,000: p99 ≤ 10 ms (issue 14): {mark(n20['latency_us']['p99'] <= 10_000)} natter {ms(n20['latency_us']['p99'])} ms, "
                         f"InspIRCd {ms(i20['latency_us']['p99'])} ms")

    def best(server):
        ok = [r["result"]["rate"] for r in sweep if r["server"] == server and holds(r["result"])]
        return max(ok) if ok else 0

    bn, bi = best("natter"), best("inspircd")
    if sweep and bn == bi == 0:
        lines.append("- Highest R with p99 ≤ 50 ms and ≥ 99% delivered: not determined: neither server held it "
                     "at any rate tried")
    elif sweep:
        lines.append(f"- Highest R with p99 ≤ 50 ms and ≥ 99% delivered: {mark(bn >= bi)} natter {bn}, InspIRCd {bi} "
                     f"(of the rates tried)")
    for run in idles:
        if run["server"] != "natter":
            continue
        r = run["result"]
        per = r["server"].get("rss_bytes_per_connection")
        lines.append(f"- {r['clients']} idle clients: ≤ 1.5 KiB each {mark(per is not None and per <= 1536)} "
                     f"{per / 1024 if per is not None else float('nan'):.2f} KiB; set up in ≤ 3 s {mark(r['setup_s'] <= 3)} {r['setup_s']} s")
    if long_runs:
        s = long_runs[-1]["result"]["server"] or {}
        a, b = s.get("rss_kib_10s"), s.get("rss_kib_end")
        if a and b:
            growth = (b - a) / a
            lines.append(f"- RSS after {long_runs[-1]['result']['duration_s']:g} s within 10% of RSS after 10 s: "
                         f"{mark(abs(growth) <= 0.10)} {a} → {b} KiB ({100 * growth:+.1f}%)")
    return lines




# --- README: how fast, in one paragraph ---------------------------------------

def num(n):
    return f"{n:,}"


def how_fast(root):
    runs, _ = split_compare(read_jsonl(root, "latest.jsonl"))
    loads = [r for r in runs if r["server"] in ("natter", "inspircd")
             and r["result"]["mode"] == "load" and r["result"]["duration_s"] < 60]
    machine = next(r["result"] for r in runs if r["server"] == "machine")

    def at(server, rate):
        return next(r["result"] for r in loads if r["server"] == server and r["result"]["rate"] == rate)

    def best(server):
        ok = [r["result"]["rate"] for r in loads if r["server"] == server and holds(r["result"])]
        return num(max(ok)) if ok else "none of the rates tried"

    def idle(server):
        r = next((r["result"] for r in runs if r["server"] == server and r["result"]["mode"] == "idle"), None)
        return f"{r['server']['rss_bytes_per_connection'] / 1024:.2f} KiB" if r else "no figure (its run failed)"

    n, i = at("natter", 10000), at("inspircd", 10000)
    run = next((r["result"] for r in runs if r["server"] == "run"), None)
    return (
        f"Measured side by side with InspIRCd on one {machine['cores']}-core machine "
        f"({num(n['clients'])} clients in conversations of {n['group']}, {n['payload']}-byte messages; "
        f"method and every figure in [docs/PERFORMANCE.md](docs/PERFORMANCE.md)): at "
        f"{num(n['rate'])} messages a second ({num(n['rate'] * (n['group'] - 1))} deliveries) natter "
        f"delivered {100 * n['delivery_ratio']:.2f}% with a p50 of {ms(n['latency_us']['p50'])} ms and a "
        f"p99 of {ms(n['latency_us']['p99'])} ms (InspIRCd: {ms(i['latency_us']['p50'])} ms and "
        f"{ms(i['latency_us']['p99'])} ms), for {n['server']['cpu_us_per_delivery']} µs of server CPU per "
        f"delivery (InspIRCd: {i['server']['cpu_us_per_delivery']} µs). The highest rate tried at which it "
        f"kept p99 under 50 ms with at least 99% delivered: {best('natter')} messages a second "
        f"(InspIRCd: {best('inspircd')}). An idle registered client held {idle('natter')} of server memory "
        f"(InspIRCd: {idle('inspircd')}).\n\n" + provenance(run, "bench/results/latest.jsonl"))


def results(root):
    runs, failed = split_compare(read_jsonl(root, "latest.jsonl"))
    return render(runs, failed)


# --- criterion ------------------------------------------------------------------

# (criterion id, what it measures, target in ns or None)
CRITERION_ROWS = [
    ("decode SEND_MESSAGE/Framed decode_command",
     "decode framed `SEND_MESSAGE`, bytes → `Command` (the server's `decode_command`)", 150),
    ("decode SEND_MESSAGE/Framed", "the same through the general path (`decode`, then `Command::from_raw`)", None),
    ("decode SEND_MESSAGE/Classic decode_command", "decode classic `SEND_MESSAGE` (`decode_command`)", None),
    ("decode SEND_MESSAGE/Classic", "… through the general path", None),
    ("decode SEND_MESSAGE/Json decode_command", "decode JSON `SEND_MESSAGE` (`decode_command`)", None),
    ("decode SEND_MESSAGE/Json", "… through the general path", None),
    ("decode SEND_MESSAGE/natter pickle::decode (pickle only)",
     "read the classic message's pickle with natter's general reader (`pickle::decode`)", None),
    ("decode SEND_MESSAGE/serde-pickle value_from_slice (pickle only)",
     "the same pickle read by serde-pickle, for comparison", None),
    ("encode MESSAGE/Framed", "encode `MESSAGE` once, framed", 100),
    ("encode MESSAGE/Classic", "encode `MESSAGE` once, classic", 100),
    ("encode MESSAGE/Json", "encode `MESSAGE` once, JSON", 100),
    ("send_message/10", "chat state: one `SEND_MESSAGE` to 10 members", None),
    ("send_message/100", "chat state: one `SEND_MESSAGE` to 100 members", None),
    ("send_message/1000", "chat state: one `SEND_MESSAGE` to 1,000 members", None),
    ("online_users/uncached/10000", "`ONLINE_USERS` for 10,000 users, built", None),
    ("online_users/cached/10000", "… cached", None),
    ("online_users/periodic_snapshot_cached/10000", "… the periodic snapshot", None),
    ("encode ONLINE_USERS 10k/Framed", "encode `ONLINE_USERS` for 10,000 users, framed", None),
    ("encode ONLINE_USERS 10k/Classic", "… classic", None),
    ("encode ONLINE_USERS 10k/Json", "… JSON", None),
]


def duration(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def criterion(root):
    lines = read_jsonl(root, "criterion.jsonl")
    by_id = {r["id"]: r for r in lines if "id" in r}
    out = [provenance(run_record(lines), "bench/results/criterion.jsonl"),
           "| benchmark | median | 95% interval of the mean | target |", "|---|---:|---:|---|"]
    for bench_id, what, target in CRITERION_ROWS:
        r = by_id.get(bench_id)
        if r is None:
            out.append(f"| {what} | not measured | | |")
            continue
        verdict = "" if target is None else f"≤ {target} ns {'✅' if r['median_ns'] <= target else '❌'}"
        out.append(f"| {what} | {duration(r['median_ns'])} | {duration(r['mean_lower_ns'])} – "
                   f"{duration(r['mean_upper_ns'])} | {verdict} |")
    return "\n".join(out) + "\n"


# --- natter A/B runs -------------------------------------------------------------

def ab_table(root, group):
    lines = read_jsonl(root, "ab.jsonl")
    rows = [r for r in lines if r.get("group") == group]
    out = [provenance(run_record(lines), "bench/results/ab.jsonl"),
           "| setting | R msg/s | delivered | p50 ms | p99 ms | server cores | µs CPU / delivery |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        r = row.get("result")
        if r is None:
            out.append(f"| `{row['flags']}` | {row['rate']} | run failed | | | | |")
            continue
        out.append(f"| `{row['flags']}` | {r['rate']} | {100 * r['delivery_ratio']:.2f}% "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                   f"| {r['server']['cpu_cores']} | {r['server']['cpu_us_per_delivery']} |")
    return "\n".join(out) + "\n"


# --- reliability -----------------------------------------------------------------

def spread(values, fmt="{:g}"):
    """'a–b' over the runs (or one value when they agree)."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def reliability_rows(root):
    lines = read_jsonl(root, "reliability.jsonl")
    figures = [r for r in lines if "test" in r]

    def of(test):
        found = [r for r in figures if r["test"] == test]
        if not found:
            sys.exit(f"reliability.jsonl has no figures of {test}")
        return found

    def col(test, key, fmt="{:g}"):
        return spread([r[key] for r in of(test)], fmt)

    return lines, of, col


def faults(root):
    lines, of, col = reliability_rows(root)
    runs = len(of("churn"))
    garbage = of("garbage")
    out = [provenance(run_record(lines), "bench/results/reliability.jsonl"),
           f"Ranges are over {runs} run{'s' if runs > 1 else ''}.\n",
           "| test | measured |", "|---|---|"]
    out.append(
        f"| churn | {col('churn', 'cycles')} cycles in {col('churn', 'seconds', '{:.1f}')} s "
        f"({col('churn', 'per_second', '{:.0f}')} a second); open descriptors "
        f"{col('churn', 'fds_before')} before, {col('churn', 'fds_after')} after; RSS "
        f"{col('churn', 'rss_kib_before')} KiB before, {col('churn', 'rss_kib_after')} KiB after; afterwards "
        f"{col('churn', 'connections')} connection, {col('churn', 'users')} user, "
        f"{col('churn', 'conversations')} conversations, {col('churn', 'peers')} peer |")
    out.append(
        f"| slow loris | {col('slow_loris', 'round_trips')} round trips a phase; p50 / p99 without "
        f"{col('slow_loris', 'p50_ms_quiet', '{:.2f}')} / {col('slow_loris', 'p99_ms_quiet', '{:.2f}')} ms, "
        f"with {col('slow_loris', 'loris')} loris {col('slow_loris', 'p50_ms_loris', '{:.2f}')} / "
        f"{col('slow_loris', 'p99_ms_loris', '{:.2f}')} ms (measured again {col('slow_loris', 'measured_again')} "
        f"times); loris still connected at the end: {col('slow_loris', 'still_open')} |")
    out.append(
        f"| broken connections | {col('broken_connections', 'broken')} broken; afterwards "
        f"{col('broken_connections', 'users')} users, {col('broken_connections', 'conversations')} conversation, "
        f"{col('broken_connections', 'peers')} peers; descriptors {col('broken_connections', 'fds_before')} → "
        f"{col('broken_connections', 'fds_after')}; the next round trip {col('broken_connections', 'round_trip_ms', '{:.2f}')} ms |")
    out.append(
        f"| slow consumer | cut off after {col('slow_consumer', 'messages')} messages "
        f"({col('slow_consumer', 'seconds', '{:.2f}')} s); the sender's p99 round trip meanwhile "
        f"{col('slow_consumer', 'p99_ms', '{:.2f}')} ms |")
    burst = of("burst")
    out.append(
        f"| burst | {col('burst', 'messages')} messages of 8,000 bytes to two readers, 16 at a time, "
        f"with a 64 KiB send queue: all delivered in {spread([b['seconds'] for b in burst], '{:.2f}')} s "
        f"(with and without write coalescing), nobody but the member that never reads cut off |")
    out.append(
        f"| flood | the flooder cut off after {col('flood', 'cut_off_s', '{:.2f}')} s; the others' "
        f"{col('flood', 'round_trips')} round trips meanwhile: p50 {col('flood', 'p50_ms', '{:.2f}')} ms, "
        f"worst {col('flood', 'max_ms', '{:.2f}')} ms |")
    per_encoding = "; ".join(
        f"{enc}: ERROR and end of stream after {spread([g['closed_ms'] for g in garbage if g['encoding'] == enc], '{:.1f}')} ms, "
        f"{spread([g['mb_written'] for g in garbage if g['encoding'] == enc], '{:.1f}')} MB written by then"
        for enc in sorted({g["encoding"] for g in garbage}))
    out.append(
        f"| garbage | {per_encoding}; the others' next round trip {spread([g['round_trip_ms'] for g in garbage], '{:.2f}')} ms; "
        f"RSS {col('garbage_memory', 'rss_kib_before')} KiB before, peak {col('garbage_memory', 'rss_kib_peak')} KiB |")
    out.append("")
    out.append(f"The whole file took {col('faults_file', 'seconds', '{:.0f}')} s of wall time "
               f"(`cargo nextest run -p natter-server --test faults`).")
    return "\n".join(out) + "\n"


def shutdown(root):
    lines, of, col = reliability_rows(root)
    runs = len(of("shutdown"))
    return (provenance(run_record(lines), "bench/results/reliability.jsonl") + "\n" +
            f"Measured ({runs} run{'s' if runs > 1 else ''}): the {col('shutdown', 'clients')} clients were ready "
            f"(registered, joined, first echo seen) in {col('shutdown', 'ready_s', '{:.1f}')} s; after SIGTERM "
            f"{col('shutdown', 'told')} of them got `ERROR \"server shutting down\"` and "
            f"{col('shutdown', 'clean_ends')} a clean end of stream, the last one "
            f"{col('shutdown', 'last_end_s', '{:.2f}')} s after the signal; the process exited "
            f"{col('shutdown', 'exit_s', '{:.2f}')} s after it.\n")


def fuzz_ci(root):
    lines = read_jsonl(root, "fuzz-ci.jsonl")
    out = [provenance(run_record(lines), "bench/results/fuzz-ci.jsonl"),
           "| target | seconds | executions | per second | new inputs |", "|---|---:|---:|---:|---:|"]
    for r in (r for r in lines if "target" in r):
        out.append(f"| `{r['target']}` | {r['seconds']} | {num(r['executions'])} | {num(r['exec_per_s'])} "
                   f"| {r['new_inputs']} |")
    return "\n".join(out) + "\n"


# --- the store ----------------------------------------------------------------------

def mark(ok):
    return "✅" if ok else "❌"


def store(root):
    """docs/STORAGE.md: bench/store.sh's run, with the targets of issue 11."""
    lines = read_jsonl(root, "store.jsonl")
    by_id = {r["id"]: r for r in lines if "id" in r}
    figures = {r["figure"]["id"]: r["figure"] for r in lines if "figure" in r}
    out = [provenance(run_record(lines), "bench/results/store.jsonl"),
           "Criterion's mean, with its 95% interval in brackets; percentiles from the bench's own timed runs.\n",
           "| what | measured | target |", "|---|---|---|"]

    def rate(bench_id, what, target=None):
        r = by_id.get(bench_id)
        if r is None:
            out.append(f"| {what} | not measured | |")
            return
        n = r.get("elements", 1)
        per_s = lambda ns: n / (ns / 1e9)
        verdict = f"≥ {num(target)}/s {mark(per_s(r['mean_ns']) >= target)}" if target else ""
        out.append(f"| {what} | {duration(r['mean_ns'])} per {num(n)} messages = **{num(int(round(per_s(r['mean_ns']), -3)))} "
                   f"messages/s** [{num(int(round(per_s(r['mean_upper_ns']), -3)))}–{num(int(round(per_s(r['mean_lower_ns']), -3)))}] "
                   f"| {verdict} |")

    def mean(bench_id, what):
        r = by_id.get(bench_id)
        out.append(f"| {what} | {duration(r['mean_ns'])} [{duration(r['mean_lower_ns'])} – "
                   f"{duration(r['mean_upper_ns'])}] | |" if r else f"| {what} | not measured | |")

    def pct(figure_id, what, noun, keys, target=None):
        f = figures.get(figure_id)
        if f is None:
            out.append(f"| {what} | not measured | |")
            return
        names = {"p50_ns": "p50", "p99_ns": "p99", "p999_ns": "p99.9", "max_ns": "max"}
        measured = ", ".join(f"{names[k]} {duration(f[k])}" for k in keys)
        verdict = ""
        if target:
            key, limit_ns, label = target
            verdict = f"{names[key]} ≤ {label} {mark(f[key] <= limit_ns)}"
        out.append(f"| {what} ({num(f['count'])} {noun}) | {measured} | {verdict} |")

    rate("commit/256", "durable commit, 256 messages of 64 bytes per transaction (100 conversations)", 150_000)
    rate("commit/1024", "durable commit, 1,024 messages per transaction", 150_000)
    rate("worker/16", "through the writer thread, batches of 16 sent as fast as they are confirmed "
         "(group commit decides the transaction size, as under the hub)", 150_000)
    mean("worker_latency/alone", "one batch of 10 alone, send → `Committed`")
    pct("worker_latency/steady_10k", "a steady 10,000 messages/s, a batch of 10 every ms over 1,000 conversations, "
        "send → `Committed`", "batches", ["p50_ns", "p99_ns", "max_ns"])
    pct("history/100", "`HISTORY` of 100 at random points of a conversation with 1,000,000 messages",
        "calls", ["p50_ns", "p99_ns", "p999_ns"], ("p99_ns", 2_000_000, "2 ms"))
    mean("history/100", "… criterion's mean of the same")
    pct("startup/1M_all_nonces_recent", "start-up (`Store::open` + `load_snapshot`), 1,000,000 messages and "
        "10,000 conversations stored, every message carrying a nonce of the last 24 h (all come back)",
        "runs", ["p50_ns", "max_ns"], ("max_ns", 2_000_000_000, "2 s"))
    mean("startup/1M_no_nonce_recent", "the same start-up when no nonce is recent")
    large = figures.get("large_store")
    if large:
        out.append(f"| size of the 1,000,000-message store | {large['bytes'] / 1e6:.0f} MB, "
                   f"{large['bytes'] / large['messages']:.0f} bytes a message (built in "
                   f"{large['build_ms'] / 1000:.1f} s) | |")
    return "\n".join(out) + "\n"


def store_writer(figures):
    """Messages per group commit and the writer thread's CPU per message
    (over the server's whole life), or dashes (ephemeral, older records)."""
    if not figures or not figures.get("commits") or not figures.get("messages"):
        return "– | –"
    return (f"{figures['messages'] / figures['commits']:.1f} "
            f"| {figures['writer_cpu_s'] * 1e6 / figures['messages']:.2f}")


def store_ab(root):
    """docs/PERFORMANCE.md: bench/store_ab.sh's interleaved runs."""
    lines = read_jsonl(root, "store_ab.jsonl")
    rows = [r for r in lines if "mode" in r]
    out = [provenance(run_record(lines), "bench/results/store_ab.jsonl"),
           "| run | mode | R msg/s | delivered | p50 ms | p99 ms | server cores | µs CPU / delivery "
           "| messages / commit | writer µs CPU / message |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cpu = {"ephemeral": [], "durable": []}
    for n, row in enumerate(rows, 1):
        r = row.get("result")
        if r is None:
            out.append(f"| {n} | {row['mode']} | {row['rate']} | run failed | | | | | | |")
            continue
        per = (r.get("server") or {}).get("cpu_us_per_delivery")
        if per is not None:
            cpu[row["mode"]].append(per)
        out.append(f"| {n} | {row['mode']} | {r['rate']} | {100 * r['delivery_ratio']:.2f}% "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                   f"| {(r.get('server') or {}).get('cpu_cores', '–')} | {per if per is not None else '–'} "
                   f"| {store_writer(row.get('store'))} |")
    out.append("")
    floors = [f"{f['floor']['us_per_send']} µs {f['when']}" for f in lines
              if "floor" in f and f.get("floor")]
    if floors:
        out.append("How fast the machine was: a plain 64-byte `send()` (bench/floor.c, at "
                   f"the runs' rate) cost {' and '.join(floors)} the runs "
                   "(bench/compare.sh's recorded runs at this rate: 5.5 µs at the quickest, "
                   "8.5 at the slowest).\n")
    for d in (f for f in lines if f.get("disk")):
        disk = d["disk"]
        out.append(f"A commit's sync on the data dir's disk {d['when']} the runs (bench/disk_probe.py, "
                   f"{disk['syncs']} fdatasyncs of 12 KiB appends): p50 {disk['p50_ms']} ms, "
                   f"p99 {disk['p99_ms']} ms, p99.9 {disk['p999_ms']} ms, max {disk['max_ms']} ms, "
                   f"{disk['over_20ms']} over 20 ms. Deliveries wait for these syncs, so a "
                   "durable run's p99 cannot be shorter than a stall that catches 1% of its messages.\n")
    durable = [r["result"] for r in rows if r["mode"] == "durable" and r.get("result")]
    failed = [r for r in rows if r["mode"] == "durable" and not r.get("result")]
    out.append("Targets (issue 11), for durable mode:\n")
    if cpu["ephemeral"] and cpu["durable"]:
        e = sum(cpu["ephemeral"]) / len(cpu["ephemeral"])
        d = sum(cpu["durable"]) / len(cpu["durable"])
        out.append(f"- CPU per delivery ≤ 1.25 × `--ephemeral`'s (means over the runs): {mark(d <= 1.25 * e)} "
                   f"{d:.2f} vs {e:.2f} µs, ratio {d / e:.2f}")
    else:
        out.append("- CPU per delivery ≤ 1.25 × `--ephemeral`'s: not determined (no CPU figures)")
    if durable:
        worst = lambda key: max(r["latency_us"][key] for r in durable)
        lowest = min(r["delivery_ratio"] for r in durable)
        out.append(f"- p50 ≤ 1 ms in every run: {mark(worst('p50') <= 1000 and not failed)} worst {ms(worst('p50'))} ms")
        out.append(f"- p99 ≤ 20 ms in every run: {mark(worst('p99') <= 20_000 and not failed)} worst {ms(worst('p99'))} ms")
        out.append(f"- 100% delivered in every run: {mark(lowest >= 1.0 and not failed)} lowest {100 * lowest:.3f}%")
    if failed:
        out.append(f"- {len(failed)} durable run(s) failed")
    return "\n".join(out) + "\n"


# --- the cluster ----------------------------------------------------------------------

def cluster_rows(root):
    lines = read_jsonl(root, "cluster.jsonl")
    return lines, [r for r in lines if "mode" in r]


def per_message_us(result):
    """A server's CPU per message sent, over the measured window."""
    server = (result or {}).get("server") or {}
    if not result or server.get("cpu_s") is None or not result.get("sent"):
        return None
    return server["cpu_s"] * 1e6 / result["sent"]


def mean_of(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def per_message_logged(rows):
    """Whether the runs counted the messages the follower applied (an entry
    may hold several since the appender batches): then a and n are per
    message, else per log entry (older runs: one input per entry)."""
    return any((r.get("log") or {}).get("follower_cpu_us_per_message") is not None for r in rows)


def cluster_costs(rows, rate=None):
    """Means over the runs (at `rate`, or all): S (single server, CPU per
    message), A (cluster node with the clients, per message), a (the
    follower, per message, or per log entry in older runs), n (the three
    nats-servers, likewise)."""
    pick = lambda mode: [r for r in rows if r["mode"] == mode and (rate is None or r["rate"] == rate)]
    unit = "message" if per_message_logged(rows) else "entry"
    return {
        "S": mean_of([per_message_us(r.get("result")) for r in pick("single")]),
        "A": mean_of([per_message_us(r.get("result")) for r in pick("cluster")]),
        "a": mean_of([(r.get("log") or {}).get(f"follower_cpu_us_per_{unit}") for r in pick("cluster")]),
        "n": mean_of([(r.get("log") or {}).get(f"nats_cpu_us_per_{unit}") for r in pick("cluster")]),
    }


def cluster(root):
    """docs/CLUSTER.md: bench/cluster.sh's runs, and what the log adds."""
    lines, rows = cluster_rows(root)
    by_message = per_message_logged(rows)
    extra_head = " follower µs CPU / message | nats-servers µs CPU / message |" if by_message else ""
    out = [provenance(run_record(lines), "bench/results/cluster.jsonl"),
           "| mode | R msg/s | delivered | p50 ms | p99 ms | µs CPU / delivery (node with the clients) "
           "| µs CPU / message | follower µs CPU / log entry | nats-servers µs CPU / log entry |" + extra_head,
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if by_message else "")]
    for row in rows:
        r = row.get("result")
        if r is None:
            out.append(f"| {row['mode']} | {row['rate']} | run failed | | | | | | |" + (" | |" if by_message else ""))
            continue
        log = row.get("log") or {}
        per_msg = per_message_us(r)
        cell = lambda v, fmt="{:.2f}": "–" if v is None else fmt.format(v)
        extra = (f" {cell(log.get('follower_cpu_us_per_message'))} | {cell(log.get('nats_cpu_us_per_message'))} |"
                 if by_message else "")
        out.append(f"| {row['mode']} | {r['rate']} | {100 * r['delivery_ratio']:.2f}% "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                   f"| {cell((r.get('server') or {}).get('cpu_us_per_delivery'))} | {cell(per_msg)} "
                   f"| {cell(log.get('follower_cpu_us_per_entry'))} | {cell(log.get('nats_cpu_us_per_entry'))} |"
                   + extra)
    out.append("")
    for rate in sorted({r["rate"] for r in rows}):
        single = [r["result"] for r in rows if r["mode"] == "single" and r["rate"] == rate and r.get("result")]
        node = [r["result"] for r in rows if r["mode"] == "cluster" and r["rate"] == rate and r.get("result")]
        if not single or not node:
            out.append(f"- R = {num(rate)}: not both modes measured")
            continue
        added = lambda key: (mean_of([r["latency_us"][key] for r in node]) -
                             mean_of([r["latency_us"][key] for r in single]))
        p50 = added("p50")
        verdict = f" (goal ≤ 2 ms at p50: {mark(p50 <= 2000)})"
        out.append(f"- R = {num(rate)}: the log adds {ms(p50)} ms at p50 and {ms(added('p99'))} ms at p99"
                   f"{verdict}")
    return "\n".join(out) + "\n"


def cluster_model(root):
    """docs/CLUSTER.md: throughput of 1 to 8 nodes, from the measured costs."""
    lines, rows = cluster_rows(root)
    # CPU per message only means something where everything was delivered:
    # the highest rate at which both modes delivered at least 99%.
    def kept_up(rate):
        runs = [r.get("result") for r in rows if r["rate"] == rate]
        return runs and all(r and r["delivery_ratio"] >= 0.99 for r in runs)

    rates = sorted({r["rate"] for r in rows if kept_up(r["rate"])})
    if not rates:
        return "Not determined: no rate at which both modes delivered at least 99%.\n"
    rate = max(rates)
    c = cluster_costs(rows, rate)
    if None in (c["A"], c["a"]):
        return f"Not determined: the runs at R = {num(rate)} lack CPU figures.\n"
    A, a, n = c["A"], c["a"], c["n"]
    unit = "message" if per_message_logged(rows) else "entry"
    out = [provenance(run_record(lines), "bench/results/cluster.jsonl"),
           f"From the runs at R = {num(rate)} (the highest rate at which both modes delivered "
           f"at least 99%): a node with the clients spends A = {A:.2f} µs of CPU per "
           f"message (applying it, appending it, delivering it to the members), a node without clients "
           + (f"a = {a:.2f} µs per message it applies from the log (an entry may hold several; "
              f"applying them, and keeping them in its own history store)"
              if unit == "message" else
              f"a = {a:.2f} µs per log entry (applying it, and keeping it in its own history store)")
           + (f"; the single server S = {c['S']:.2f} µs per message" if c["S"] is not None else "")
           + (f"; the three nats-servers together n = {n:.2f} µs per {unit}" if n is not None else "")
           + ".\n",
           "| nodes | CPU per message on each node, µs | most messages/s (one core a node) | of linear |",
           "|---:|---:|---:|---:|"]
    for nodes in range(1, 9):
        per_node = a + (A - a) / nodes
        most = 1e6 / per_node
        linear = nodes * 1e6 / A
        out.append(f"| {nodes} | {per_node:.2f} | {num(int(round(most, -2)))} | {most / linear:.2f} |")
    four = (1e6 / (a + (A - a) / 4)) / (4 * 1e6 / A)
    out.append("")
    out.append(f"- Goal: at least 0.8 of linear up to 4 nodes: {mark(four >= 0.8)} {four:.2f} at 4.")
    out.append(f"- However many nodes, every one applies every entry: no more than "
               f"{num(int(round(1e6 / a, -2)))} messages/s in all (1 / a).")
    if n is not None:
        what = "messages" if unit == "message" else "entries"
        out.append(f"- The log itself, at the CPU the three nats-servers used here, is another ceiling: "
                   f"{num(int(round(1e6 / n, -2)))} {what}/s if one core did all of their work, "
                   f"{num(int(round(3e6 / n, -2)))} if each server has a core and the work splits evenly.")
    return "\n".join(out) + "\n"


def identity(root):
    """docs/PERFORMANCE.md: bench/identity.sh (TLS fan-out, login storm, idle TLS)."""
    lines = read_jsonl(root, "identity.jsonl")
    rows = [r for r in lines if "mode" in r]
    out = [provenance(run_record(lines), "bench/results/identity.jsonl"),
           "| run | mode | delivered | p50 ms | p99 ms | server cores | µs CPU / delivery |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    cpu = {"plain": [], "tls": []}
    fanout = [r for r in rows if r["mode"] in cpu]
    for n, row in enumerate(fanout, 1):
        r = row.get("result")
        if r is None:
            out.append(f"| {n} | {row['mode']} | run failed | | | | |")
            continue
        per = (r.get("server") or {}).get("cpu_us_per_delivery")
        if per is not None:
            cpu[row["mode"]].append(per)
        out.append(f"| {n} | {row['mode']} | {100 * r['delivery_ratio']:.2f}% "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                   f"| {(r.get('server') or {}).get('cpu_cores', '–')} | {per if per is not None else '–'} |")
    out.append("")
    out.append("Targets (issue 12):\n")
    tls_runs = [r["result"] for r in fanout if r["mode"] == "tls" and r.get("result")]
    if cpu["plain"] and cpu["tls"]:
        p = sum(cpu["plain"]) / len(cpu["plain"])
        t = sum(cpu["tls"]) / len(cpu["tls"])
        delivered = bool(tls_runs) and min(r["delivery_ratio"] for r in tls_runs) >= 1.0
        out.append(f"- TLS fan-out (C = 1000, K = 10, R = 10,000): CPU per delivery ≤ 1.5 × plaintext's "
                   f"(means over the runs): {mark(t <= 1.5 * p)} {t:.2f} vs {p:.2f} µs, ratio {t / p:.2f}; "
                   f"100% delivered over TLS: {mark(delivered)}")
    else:
        out.append("- TLS fan-out: not determined (a run failed or has no CPU figures)")
    storm = next((r for r in rows if r["mode"] == "storm"), None)
    s = storm and storm.get("result")
    if s and s.get("login_storm"):
        st = s["login_storm"]
        rss = (st.get("rss_kib_before"), st.get("rss_kib_peak"))
        out.append(f"- A storm of {st['logins']:,} password logins within 1 s while {s['clients']} clients chat "
                   f"at R = {s['rate']:,}: chat p99 ≤ 50 ms: {mark(s['latency_us']['p99'] <= 50_000)} "
                   f"{ms(s['latency_us']['p99'])} ms (p50 {ms(s['latency_us']['p50'])} ms, "
                   f"{100 * s['delivery_ratio']:.2f}% delivered). Logins: {st['accepted']:,} accepted, "
                   f"{st['busy']:,} told the server is busy, {st['failed']:,} failed; answer p50 "
                   f"{ms(st['answer_us']['p50'])} ms, p99 {ms(st['answer_us']['p99'])} ms; all answered "
                   f"after {st['all_answered_s']:.1f} s. Server RSS {rss[0]:,} KiB before, "
                   f"peak {rss[1]:,} KiB during the storm.")
    else:
        out.append("- Login storm: not determined (the run failed)")
    idle = {r["mode"]: (r.get("result") or {}).get("server", {}).get("rss_bytes_per_connection")
            for r in rows if r["mode"].startswith("idle-")}
    plain, tls = idle.get("idle-plain"), idle.get("idle-tls")
    n = next((r["result"]["clients"] for r in rows if r["mode"] == "idle-tls" and r.get("result")), None)
    if plain and tls:
        out.append(f"- {n:,} idle connections: memory per TLS connection ≤ 3 × plaintext's: "
                   f"{mark(tls <= 3 * plain)} {tls / 1024:.2f} KiB vs {plain / 1024:.2f} KiB "
                   f"(ratio {tls / plain:.2f})")
    else:
        out.append("- Idle TLS connections: not determined (a run failed)")
    return "\n".join(out) + "\n"


def metrics_ab(root):
    """docs/PERFORMANCE.md: bench/metrics_ab.sh's interleaved runs."""
    source = "bench/results/metrics_ab.jsonl"
    if not os.path.exists(os.path.join(root, source)):
        return (f"*Not measured yet: `{source}` does not exist. `bench/metrics_ab.sh` on a quiet "
                "machine writes it.*\n")
    lines = read_jsonl(root, "metrics_ab.jsonl")
    rows = [r for r in lines if "mode" in r]
    base = next((r["base"] for r in lines if "base" in r), None)
    out = [provenance(run_record(lines), source)]
    if base:
        out.append(f"Base (without metrics): commit `{base[:10]}`.\n")
    out += ["| run | build | R msg/s | delivered | p50 ms | p99 ms | server cores | µs CPU / delivery | deliveries counted (whole run) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    cpu = {"base": [], "metrics": []}
    for n, row in enumerate(rows, 1):
        r = row.get("result")
        name = {"base": "without metrics", "metrics": "with metrics"}[row["mode"]]
        if r is None:
            out.append(f"| {n} | {name} | {row['rate']} | run failed | | | | | |")
            continue
        per = (r.get("server") or {}).get("cpu_us_per_delivery")
        if per is not None:
            cpu[row["mode"]].append(per)
        counted = row.get("deliveries_counted")
        counted = f"{counted:.0f}" if isinstance(counted, (int, float)) else "–"
        out.append(f"| {n} | {name} | {r['rate']} | {100 * r['delivery_ratio']:.2f}% "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                   f"| {(r.get('server') or {}).get('cpu_cores', '–')} | {per if per is not None else '–'} | {counted} |")
    out.append("")
    out.append("Target (issue 16):\n")
    if cpu["base"] and cpu["metrics"]:
        b = sum(cpu["base"]) / len(cpu["base"])
        m = sum(cpu["metrics"]) / len(cpu["metrics"])
        out.append(f"- CPU per delivery with metrics ≤ 1.02 × without (means over the runs): {mark(m <= 1.02 * b)} "
                   f"{m:.3f} vs {b:.3f} µs, ratio {m / b:.3f}")
    else:
        out.append("- CPU per delivery with metrics ≤ 1.02 × without: not determined (no CPU figures)")
    return "\n".join(out) + "\n"


def idle(root):
    """docs/PERFORMANCE.md: bench/idle.sh (idle connections, setup split into phases)."""
    lines = read_jsonl(root, "idle.jsonl")
    rows = [r for r in lines if "mode" in r]
    out = [provenance(run_record(lines), "bench/results/idle.jsonl"),
           "| presence | clients | RSS per connection | setup s | connect s | register s | join s "
           "| server CPU s: connect / register / join |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        r = row.get("result")
        if r is None:
            out.append(f"| {row['mode']} | run failed | | | | | | |")
            continue
        per = r["server"].get("rss_bytes_per_connection")
        phases = r.get("setup_phases") or {}
        span = lambda p: (phases.get(p) or {}).get("span_s")
        cpu = " / ".join(str((phases.get(p) or {}).get("server_cpu_s", "–"))
                         for p in ("connect", "register", "join"))
        out.append(f"| {row['mode']} | {r['clients']} | {per / 1024:.2f} KiB | {r['setup_s']} "
                   f"| {span('connect')} | {span('register')} | {span('join')} | {cpu} |"
                   if per is not None else f"| {row['mode']} | {r['clients']} | – | {r['setup_s']} | | | | |")
    out.append("")
    out.append("Targets (issue 14), with `presence-scope`:\n")
    scoped = next((r["result"] for r in rows if r["mode"] == "scope" and r.get("result")), None)
    if scoped and scoped["server"].get("rss_bytes_per_connection") is not None:
        per = scoped["server"]["rss_bytes_per_connection"]
        out.append(f"- {scoped['clients']:,} idle clients: ≤ 1.5 KiB each {mark(per <= 1536)} {per / 1024:.2f} KiB; "
                   f"set up in ≤ 3 s {mark(scoped['setup_s'] <= 3)} {scoped['setup_s']} s")
    else:
        out.append("- not determined (the scoped run failed)")
    return "\n".join(out) + "\n"


def profile(root):
    """docs/PERFORMANCE.md: bench/profile.sh (syscalls per delivery, kernel share, hot functions)."""
    source = "bench/results/profile.jsonl"
    if not os.path.exists(os.path.join(root, source)):
        return (f"*Not measured yet: `{source}` does not exist. `bench/profile.sh` on a quiet "
                "machine writes it.*\n")
    lines = read_jsonl(root, "profile.jsonl")
    rows = [r for r in lines if "server" in r]
    out = [provenance(run_record(lines), source),
           "| server | R msg/s | delivered | p50 ms | p99 ms | µs CPU / delivery | writes / delivery "
           "| reads / message | in the kernel | hottest user-space functions (share of all samples) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        r, calls = row["result"], row["syscalls_2s"]
        deliveries = row["deliveries_2s"] or 1
        messages = r["rate"] * 2
        writes = sum(calls.get(k, 0) for k in ("writev", "write", "sendto", "sendmsg"))
        reads = sum(calls.get(k, 0) for k in ("recvfrom", "read"))
        hot = "; ".join(f"`{name.split(' ', 1)[-1].split('::')[-1]}` {share}%"
                        for share, name in row["top_user_symbols"][:3])
        out.append(f"| {row['server']} | {r['rate']} | {100 * r['delivery_ratio']:.2f}% "
                   f"| {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                   f"| {r['server']['cpu_us_per_delivery']} | {writes / deliveries:.2f} "
                   f"| {reads / messages:.2f} | {row['kernel_share']}% | {hot} |")
    out.append("")
    out += profile_reading(rows)
    return "\n".join(out) + "\n"


def profile_split(row):
    """CPU per delivery in the kernel and outside it, and writes per delivery."""
    r, calls = row["result"], row["syscalls_2s"]
    cpu = r["server"]["cpu_us_per_delivery"]
    writes = sum(calls.get(k, 0) for k in ("writev", "write", "sendto", "sendmsg"))
    per_delivery = writes / (row["deliveries_2s"] or 1)
    kernel = cpu * row["kernel_share"] / 100
    return cpu, kernel, cpu - kernel, per_delivery


def profile_reading(rows):
    """What the profiles say about issue 14's CPU target at each rate."""
    lines = []
    for rate in sorted({row["result"]["rate"] for row in rows}):
        pair = {row["server"]: row for row in rows if row["result"]["rate"] == rate}
        if "natter" not in pair or "inspircd" not in pair:
            continue
        n_cpu, n_kernel, n_user, n_writes = profile_split(pair["natter"])
        i_cpu, i_kernel, i_user, i_writes = profile_split(pair["inspircd"])
        goal = 1.0 if rate <= 10_000 else 0.8
        line = (f"- R = {rate:,}: natter {n_cpu:.2f} µs per delivery ({n_kernel:.2f} in the kernel, "
                f"{n_user:.2f} outside it, {n_writes:.2f} writes), InspIRCd {i_cpu:.2f} ({i_kernel:.2f}, "
                f"{i_user:.2f}, {i_writes:.2f} writes): ratio {n_cpu / i_cpu:.2f} against ≤ {goal:g}")
        per_write = n_kernel / n_writes if n_writes else 0
        if n_cpu > goal * i_cpu and per_write > 0:
            needed = (goal * i_cpu - n_user) / per_write
            line += (f" ❌. At natter's kernel cost per write ({per_write:.2f} µs, the kernel's work "
                     f"divided by the writes) and its cost outside the kernel, the goal needs "
                     f"{max(needed, 0):.2f} writes per delivery")
        elif n_cpu <= goal * i_cpu:
            line += " ✅"
        lines.append(line)
    return lines


RENDERERS = {
    "how-fast": how_fast,
    "results": results,
    "criterion": criterion,
    "coalescing": lambda root: ab_table(root, "coalescing"),
    "threads": lambda root: ab_table(root, "threads"),
    "low-rate": lambda root: ab_table(root, "low-rate"),
    "faults": faults,
    "shutdown": shutdown,
    "fuzz-ci": fuzz_ci,
    "store": store,
    "store-ab": store_ab,
    "cluster": cluster,
    "cluster-model": cluster_model,
    "metrics-ab": metrics_ab,
    "identity": identity,
    "idle": idle,
    "profile": profile,
}

# --- the check for figures outside the blocks ------------------------------------

UNIT = r"(?:ns|µs|us|ms|s|KiB|KB|MB|MiB|GB|GiB|%)"
STRAY = [
    re.compile(rf"(?<![\w.])\d[\d,]*\.\d+ ?{UNIT}(?!\w)"),   # 0.88 ms, 3.3 KiB, 1.5 s
    re.compile(r"(?<![\w.])\d[\d,]* ?(?:ns|µs|%)(?!\w)"),    # 59 ns, 7 µs, 85%
    re.compile(r"(?<![\w.])\d[\d,]{3,} executions"),          # 2,315,659 executions
]


def prose(text):
    """The text outside figure blocks, code fences and inline code."""
    text = BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def stray_figures(path, text):
    found = []
    for n, line in enumerate(prose(text).splitlines(), 1):
        for pattern in STRAY:
            found += [f"{path}: {m.group(0)!r} in {line.strip()!r}" for m in pattern.finditer(line)]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = parser.parse_args()
    problems = []
    docs = ["README.md"] + sorted(os.path.relpath(p, args.root)
                                  for p in glob.glob(os.path.join(args.root, "docs", "*.md")))
    for doc in docs:
        path = os.path.join(args.root, doc)
        text = open(path).read()

        def fill(match):
            name = match.group(2)
            if name not in RENDERERS:
                problems.append(f"{doc}: unknown figures block {name!r}")
                return match.group(0)
            return match.group(1) + RENDERERS[name](args.root).rstrip("\n") + "\n" + match.group(4)

        new = BLOCK.sub(fill, text)
        problems += stray_figures(doc, new)
        if new != text:
            if args.check:
                stale = [m.group(2) for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new))
                         if m.group(0) != n.group(0)]
                problems.append(f"{doc}: figures differ from bench/results in {', '.join(stale)} "
                                f"(run python3 bench/render.py)")
            else:
                open(path, "w").write(new)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
