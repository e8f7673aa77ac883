#!/usr/bin/env python3
"""Turns the JSON lines of bench/compare.sh into the tables of
docs/PERFORMANCE.md, between the markers <!-- bench:begin --> and
<!-- bench:end -->, with a verdict for each target of the performance issue.

Usage: table.py RESULTS.jsonl docs/PERFORMANCE.md
"""
import json
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def load(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    return [r for r in runs if not r.get("failed")], [r for r in runs if r.get("failed")]


def ms(us):
    return f"{us / 1000:.2f}"


def holds(r):
    return r["delivery_ratio"] >= 0.99 and r["latency_us"]["p99"] <= 50_000


def render(runs, failed):
    out = []
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
            lines.append(f"- R = 20,000: below InspIRCd's: {mark(cpu(n20) < cpu(i20))} {cpu(n20)} vs {cpu(i20)} µs")
            lines.append(f"- R = 20,000: p99 ≤ 50 ms: {mark(n20['latency_us']['p99'] <= 50_000)} natter {ms(n20['latency_us']['p99'])} ms, "
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


def main():
    runs, failed = load(sys.argv[1])
    doc_path = sys.argv[2]
    text = open(doc_path).read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{doc_path} lacks the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    open(doc_path, "w").write(head + BEGIN + "\n" + render(runs, failed) + "\n" + END + tail)


if __name__ == "__main__":
    main()
