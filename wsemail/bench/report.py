"""In charge of the test bed's figures: latency summaries, the report in the paper's
terms (Tables 1 and 2), and an optional plot."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from wsemail.bench.load import Client
from wsemail.bench.options import EXTERNAL, LOCAL, OPS, Options
from wsemail.core.units import percentile
from wsemail.protocol.errors import UsageError


def latency_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return dict.fromkeys(("mean", "variance", "stdev", "min", "p50", "p90", "p99", "max"), 0.0)
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "variance": round(statistics.pvariance(ordered), 3),
        "stdev": round(statistics.pstdev(ordered), 3),
        "min": round(ordered[0], 3),
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (a server's workers, a database's backends)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ValueError):
            continue
        total += sum(process_tree_cpu(child) for child in children)
    try:
        return total + cpu_seconds(pid)
    except FileNotFoundError:
        return total


# -- the run ------------------------------------------------------------------------------


def summarise(
    options: Options,
    clients: list[Client],
    feed_counts: dict[str, int],
    wall: float,
    cpu: dict[str, float],
) -> dict[str, Any]:
    per_op: dict[str, Any] = {}
    every: list[float] = []
    sent_total = received_total = failed = 0
    for op in OPS:
        tallies = [c.tallies[op] for c in clients]
        latencies = [x for t in tallies for x in t.latencies]
        every += latencies
        count = len(latencies)
        op_failed = sum(t.failed for t in tallies)
        sent = sum(t.sent for t in tallies)
        received = sum(t.received for t in tallies)
        sent_total += sent
        received_total += received
        failed += op_failed
        requests = count + op_failed
        relayed = sum(t.relayed for t in tallies)
        relayed_down = sum(t.relayed_received for t in tallies)
        per_op[op] = {
            "count": count,
            "failed": op_failed,
            "skipped": sum(t.skipped for t in tallies),
            "latency_ms": latency_summary(latencies),
            "bytes_client_to_server": sent,
            "bytes_server_to_client": received,
            "bytes_per_request_up": round(sent / requests) if requests else 0,
            "bytes_per_request_down": round(received / requests) if requests else 0,
        }
        if op == "retrieve":  # local copies vs copies relayed from S_e (compact provenance)
            local_n = requests - relayed
            per_op[op]["local_bytes_per_request_down"] = (
                round((received - relayed_down) / local_n) if local_n else 0
            )
            per_op[op]["relayed_count"] = relayed
            per_op[op]["relayed_bytes_per_request_down"] = (
                round(relayed_down / relayed) if relayed else 0
            )
    total = len(every) + failed
    for op in OPS:
        n = per_op[op]["count"] + per_op[op]["failed"]
        per_op[op]["share_percent"] = round(100 * n / total, 1) if total else 0.0
    return {
        "clients": options.clients,
        "requests": total,
        "failed": failed,
        "failures": [vars(f) for c in clients for f in c.failures][:10],
        "seconds": round(wall, 3),
        "message_size": options.size,
        "signed_answers": options.signed_answers,
        "mix": {op: round(w, 4) for op, w in options.mix.items()},
        "open_loop_rate": options.rate,
        "latency_ms": latency_summary(every),
        "requests_per_s": round(total / wall, 1) if wall else 0.0,
        "per_op": per_op,
        "bytes": {
            "client_to_server": sent_total,
            "server_to_client": received_total,
        },
        "external_feed": {"sent": feed_counts["ok"], "failed": feed_counts["failed"]},
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_request": {
            k: round(v * 1000 / total, 3) if total else 0.0 for k, v in cpu.items()
        },
    }


# -- output -------------------------------------------------------------------------------


def print_report(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    mb = 1 / 1e6
    print(
        f"\nwsemail test bed: {r['clients']} clients, {r['requests']} requests in "
        f"{r['seconds']:.1f} s, {r['message_size']} B messages, TLS + password MAC + "
        "XMLDSIG on every server hop" + (" + signed answers" if r.get("signed_answers") else "")
    )
    print(
        f"  latency ms   mean {lat['mean']:.2f}  stdev {lat['stdev']:.2f}  variance "
        f"{lat['variance']:.2f}  min {lat['min']:.2f}  p50 {lat['p50']:.2f}  p90 "
        f"{lat['p90']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
    )
    print(
        f"  throughput   {r['requests_per_s']} requests/s, {r['messages_per_minute']} "
        f"messages/minute (sends + incoming relayed), {r['failed']} failed"
    )
    print("  paper (2005) latency mean 284 ms, min 47 ms, max 4,000 ms; ~1,787 messages/minute")
    print("\n  Table 1: clients <-> local.test, per operation (HTTP bytes)")
    print(
        f"  {'operation':<10}{'requests':>9}{'share %':>9}{'mean ms':>9}{'p50':>8}{'p99':>8}"
        f"{'max':>9}{'up MB':>9}{'down MB':>9}{'up B/req':>10}{'down B/req':>11}"
    )
    for op, s in r["per_op"].items():
        ls = s["latency_ms"]
        print(
            f"  {op:<10}{s['count'] + s['failed']:>9}{s['share_percent']:>9.1f}"
            f"{ls['mean']:>9.2f}{ls['p50']:>8.2f}{ls['p99']:>8.2f}{ls['max']:>9.2f}"
            f"{s['bytes_client_to_server'] * mb:>9.3f}{s['bytes_server_to_client'] * mb:>9.3f}"
            f"{s['bytes_per_request_up']:>10}{s['bytes_per_request_down']:>11}"
        )
    retrieve = r["per_op"]["retrieve"]
    print(
        f"  retrieve answer: {retrieve['local_bytes_per_request_down']} B for a local message, "
        f"{retrieve['relayed_bytes_per_request_down']} B for one relayed from {EXTERNAL} "
        f"({retrieve['relayed_count']} of them, with compact provenance)"
    )
    skipped = {op: s["skipped"] for op, s in r["per_op"].items() if s["skipped"]}
    if skipped:
        print(f"  not counted (empty inbox): {skipped}")
    print("\n  Table 2: between the servers (TLS stream bytes)")
    print(
        f"  {'server':<15}{'messages':>9}{'sent MB':>10}{'confirmations MB':>18}{'B/message':>11}"
    )
    for name, s in r["servers"].items():
        per = round(s["sent_bytes"] / s["messages_relayed"]) if s["messages_relayed"] else 0
        print(
            f"  {name:<15}{s['messages_relayed']:>9}{s['sent_bytes'] * mb:>10.3f}"
            f"{s['confirmation_bytes'] * mb:>18.3f}{per:>11}"
        )
    cpu = r["cpu_ms_per_request"]
    print(
        f"\n  CPU ms per request: local server {cpu['local']}, external server "
        f"{cpu['external']}, load generator {cpu['generator']}"
        + (f", PostgreSQL {cpu['database']}" if r.get("nodes") else "")
    )
    if r.get("queue_left"):
        print(f"  warning: {r['queue_left']} queue rows were still undelivered at the end")
    for failure in r["failures"]:
        print(f"  failed {failure['op']}: HTTP {failure['status']} {failure['body'][:160]!r}")
    if "plot" in r:
        print(f"  latency plot written to {r['plot']}")
    if "profile" in r:
        print(f"  profile of {LOCAL} written to {r['profile']}")


def plot(latencies: dict[str, list[float]], target: Path) -> None:
    """Latency distribution per operation (needs matplotlib): a histogram on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    values = [x for xs in latencies.values() for x in xs if x > 0]
    if values:
        low, high = min(values), max(values)
        edges = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 10
        for op, xs in latencies.items():
            if xs:
                axes.hist(xs, bins=edges, histtype="step", linewidth=1.5, label=f"{op} ({len(xs)})")
        axes.set_xscale("log")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    axes.set_title("wsemail test bed: latency per operation")
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        plt.close(figure)
