"""Markdown table (ratios to HAProxy) and PNG plots from a results document.

python -m bench.report bench/results/<date>.json     # re-render from a saved JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PEER_ORDER = ("haproxy", "sidecar", "stunnel", "bare")
COLORS = {"haproxy": "#4c72b0", "sidecar": "#dd8452", "stunnel": "#55a868", "bare": "#8172b3", "direct": "#999999"}

# (case, metric, label) rows of the main table
ROWS: tuple[tuple[str, str, str], ...] = (
    ("hs1.3-default", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.3, default tickets"),
    ("hs1.3-default", "rate", "Handshakes/s (wall), TLS 1.3, default tickets"),
    ("hs1.3-default", "connect_p50_ms", "Connect time p50 (ms), TLS 1.3, 8 in flight"),
    ("hs1.3-default", "connect_p99_ms", "Connect time p99 (ms), TLS 1.3, 8 in flight"),
    ("hs1.3-c1", "connect_p50_ms", "Connect time p50 (ms), TLS 1.3, one at a time"),
    ("hs1.3-c1", "connect_p99_ms", "Connect time p99 (ms), TLS 1.3, one at a time"),
    ("hs1.3-off", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.3, tickets off"),
    ("hs1.3-off", "rate", "Handshakes/s (wall), TLS 1.3, tickets off"),
    ("hs1.2-default", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.2, default tickets"),
    ("hs1.2-default", "rate", "Handshakes/s (wall), TLS 1.2, default tickets"),
    ("hs1.2-off", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.2, tickets off"),
    ("hs1.3-default-unpinned", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.3, unpinned"),
    ("hs1.3-default-unpinned", "rate", "Handshakes/s (wall), TLS 1.3, unpinned"),
    ("bulk-up-1", "mb_per_s", "Bulk upload MB/s, 1 connection"),
    ("bulk-up-1", "proxy_cpu_s_per_gb", "Proxy CPU-s per GB, upload, 1 connection"),
    ("bulk-down-1", "mb_per_s", "Bulk download MB/s, 1 connection"),
    ("bulk-down-1", "proxy_cpu_s_per_gb", "Proxy CPU-s per GB, download, 1 connection"),
    ("bulk-up-4", "mb_per_s", "Bulk upload MB/s, 4 connections"),
    ("bulk-up-4", "proxy_cpu_s_per_gb", "Proxy CPU-s per GB, upload, 4 connections"),
    ("bulk-up-1-unpinned", "mb_per_s", "Bulk upload MB/s, 1 connection, unpinned"),
    ("rtt-1", "rtt_p50_us", "Round trip p50 (µs), 1 byte"),
    ("rtt-1", "rtt_p99_us", "Round trip p99 (µs), 1 byte"),
    ("rtt-1", "proxy_cpu_us_per_rt", "Proxy CPU-µs per 1-byte round trip"),
    ("rtt-1024", "rtt_p50_us", "Round trip p50 (µs), 1 KiB"),
    ("rtt-1024", "rtt_p99_us", "Round trip p99 (µs), 1 KiB"),
    ("rtt-1-unpinned", "rtt_p50_us", "Round trip p50 (µs), 1 byte, unpinned"),
    ("idle", "kb_per_conn", "RSS per idle TLS connection (KB)"),
    ("scale", "kb_per_conn", "RSS per idle TLS connection at scale (KB)"),
    ("hs1.3-policy", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.3, full policy"),
    ("hs1.2-policy", "per_proxy_cpu_s", "Handshakes per proxy CPU-s, TLS 1.2, full policy"),
)

PLOTS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "handshakes-per-proxy-cpu",
        "per_proxy_cpu_s",
        (
            "hs1.3-default",
            "hs1.3-off",
            "hs1.2-default",
            "hs1.2-off",
            "hs1.3-policy",
            "hs1.2-policy",
            "hs1.3-default-unpinned",
        ),
        "full handshakes per proxy CPU-second (higher is better)",
    ),
    (
        "handshakes-rate",
        "rate",
        ("hs1.3-default", "hs1.3-off", "hs1.2-default", "hs1.2-off", "hs1.3-default-unpinned"),
        "full handshakes per second, wall clock (load-limited, see README)",
    ),
    ("connect-p50", "connect_p50_ms", ("hs1.3-default", "hs1.2-default", "hs1.3-c1"), "connect time p50, ms"),
    ("connect-p99", "connect_p99_ms", ("hs1.3-default", "hs1.2-default", "hs1.3-c1"), "connect time p99, ms"),
    (
        "bulk-mbps",
        "mb_per_s",
        ("bulk-up-1", "bulk-down-1", "bulk-up-4", "bulk-up-1-unpinned"),
        "bulk throughput, MB/s (higher is better)",
    ),
    (
        "bulk-cpu-per-gb",
        "proxy_cpu_s_per_gb",
        ("bulk-up-1", "bulk-down-1", "bulk-up-4"),
        "proxy CPU-seconds per GB (lower is better)",
    ),
    ("rtt-p50", "rtt_p50_us", ("rtt-1", "rtt-1024", "rtt-1-unpinned"), "round trip p50, µs (lower is better)"),
    ("rtt-p99", "rtt_p99_us", ("rtt-1", "rtt-1024", "rtt-1-unpinned"), "round trip p99, µs (lower is better)"),
    ("idle-memory", "kb_per_conn", ("idle", "scale"), "RSS per idle mutual-TLS connection, KB (lower is better)"),
)


def _med(results: dict[str, Any], case: str, peer: str, metric: str) -> float | None:
    value = results.get(case, {}).get(peer, {}).get(metric)
    return value["median"] if isinstance(value, dict) else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def markdown(doc: dict[str, Any]) -> str:
    results = doc["results"]
    peers = [p for p in PEER_ORDER if any(p in by_peer for by_peer in results.values())]
    reps = doc["settings"]["reps"]
    out: list[str] = []
    out.append(f"# sidecar benchmark — {doc['date']} ({doc['mode']} run, {doc['duration_s']:.0f} s)\n")
    out.append(
        f"Medians of {reps} repetition(s); ratio = peer ÷ HAProxy (for times and CPU, below 1 is better); "
        "bare = a bare relay on sidecar's own TLS engine (bench/bare.py), the floor of sidecar's design. "
        f"Proxy on CPU {doc['pinning']['proxy_cpu']}, load client + backend on CPU {doc['pinning']['load_cpu']} "
        f"unless the row says unpinned. Load average at start {doc['loadavg_start']}, at end {doc['loadavg_end']}: "
        "other work shared the machine. Last column: median CPU use during the measured window, proxy process "
        "tree / load client + backend (1.00 = one full core); a proxy at ≈1.00 when pinned was the limit.\n"
    )
    # The floor column: sidecar against the bare relay on its own TLS engine (bench/bare.py).
    with_floor = "sidecar" in peers and "bare" in peers
    header = (
        "| Metric | "
        + " | ".join(f"{p}" + ("" if p == "haproxy" else f" | {p} ÷ HAProxy") for p in peers)
        + (" | sidecar ÷ bare" if with_floor else "")
        + " | CPU use proxy/load |"
    )
    out.append(header)
    out.append("|" + "---|" * (header.count("|") - 1))
    for case, metric, label in ROWS:
        if case not in results:
            continue
        values = {p: _med(results, case, p, metric) for p in peers}
        if all(v is None for v in values.values()):
            continue
        cells = []
        for p in peers:
            cells.append(_fmt(values[p]))
            if p != "haproxy":
                cells.append(_ratio(values[p], values.get("haproxy")))
        if with_floor:
            cells.append(_ratio(values["sidecar"], values["bare"]))
        utils = ""
        if metric in ("per_proxy_cpu_s", "mb_per_s"):
            utils = " · ".join(
                f"{p[:2]} {_fmt(_med(results, case, p, 'util_proxy'))}/{_fmt(_med(results, case, p, 'util_load'))}"
                for p in peers
                if _med(results, case, p, "util_proxy") is not None
            )
        out.append(f"| {label} | " + " | ".join(cells) + f" | {utils} |")
    contended = sorted(
        f"{case}/{peer} ({entry['contended_runs']})"
        for case, by_peer in results.items()
        for peer, entry in by_peer.items()
        if entry.get("contended_runs")
    )
    out.append(
        f"\nWindows in which other processes took more than 15 % of a core we used were measured again "
        f"(at most twice each; {doc.get('retries_used', 0)} re-measurements in this run). "
        + (
            f"Still contended after that, median includes them: {', '.join(contended)}."
            if contended
            else "Every kept window was clean."
        )
    )
    out.append("")

    if doc.get("bar"):
        out.append("## sidecar against the bar (HAProxy 2.6 = 1.00; the bare relay where named)\n")
        out.append("| Target | Measured | Bar | Met |")
        out.append("|---|---|---|---|")
        for check in doc["bar"]:
            value = check["value"]
            shown = "–" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
            met = {True: "yes", False: "**no**", None: "–"}[check["met"]]
            out.append(f"| {check['target']} | {shown} | {check['bar']} | {met} |")
        out.append("")

    floor = {case: by_peer["direct"] for case, by_peer in results.items() if "direct" in by_peer}
    if floor:
        out.append("## Harness floor (plaintext, client straight to the backend, both on the load CPU)\n")
        parts = []
        for case, entry in sorted(floor.items()):
            if "mb_per_s" in entry:
                parts.append(f"{case}: {_fmt(entry['mb_per_s']['median'])} MB/s")
            if "rtt_p50_us" in entry:
                parts.append(
                    f"{case}: p50 {_fmt(entry['rtt_p50_us']['median'])} µs, "
                    f"p99 {_fmt(entry['rtt_p99_us']['median'])} µs"
                )
        out.append("; ".join(parts) + ".\n")

    if "scale" in results:
        out.append("## Many idle connections\n")
        out.append("| Peer | requested | held | open errors | echo failures after hold | KB/conn | proxy threads |")
        out.append("|---|---|---|---|---|---|---|")
        for p in peers:
            entry = results["scale"].get(p)
            if entry:
                kb = entry.get("kb_per_conn", {}).get("median") if isinstance(entry.get("kb_per_conn"), dict) else None
                out.append(
                    f"| {p} | {entry.get('requested')} | {entry.get('held')} | {entry.get('open_errors')} | "
                    f"{entry.get('echo_failures')} | {_fmt(kb)} | {entry.get('proxy_threads')} |"
                )
        out.append("")

    probe = doc.get("tickets_probe")
    if probe:
        out.append("## Session tickets actually sent (NewSessionTicket messages per full handshake)\n")
        out.append("| Peer / mode | TLS 1.3 | TLS 1.2 |")
        out.append("|---|---|---|")
        for key, by_tls in probe.items():
            cells = [str(by_tls.get(t, {}).get("tickets", by_tls.get(t, {}).get("error", "?"))) for t in ("1.3", "1.2")]
            out.append(f"| {key} | {cells[0]} | {cells[1]} |")
        out.append("")

    out.append("## Versions\n")
    for name, version in doc["versions"].items():
        out.append(f"* {name}: {version}")
    out.append(f"* load client: {doc['client']}")
    out.append(f"* machine: {doc['machine']}")
    out.append("")

    profile = doc.get("profile")
    if profile and not profile.get("skipped"):
        out.append("## Where sidecar's time goes (py-spy, 250 Hz, 5 s, pinned)\n")
        for case, summary in profile.items():
            if "failed" in summary:
                out.append(f"* {case}: profile failed: {summary['failed']}")
                continue
            out.append(f"### {case} — {summary['samples']} samples; load: {summary['load']}\n")
            out.append("| self % | function | | inclusive % | function |")
            out.append("|---|---|---|---|---|")
            for (own, own_pct), (inc, inc_pct) in zip(
                summary["self_pct"][:12], summary["inclusive_pct"][:12], strict=False
            ):
                out.append(f"| {own_pct} | `{own}` | | {inc_pct} | `{inc}` |")
            out.append("")
    return "\n".join(out) + "\n"


def plots(doc: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc["results"]
    written: list[Path] = []
    for name, metric, cases, title in PLOTS:
        cases = tuple(c for c in cases if c in results)
        if not cases:
            continue
        peers = [p for p in (*PEER_ORDER, "direct") if any(p in results[c] and metric in results[c][p] for c in cases)]
        if not peers:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases) + 2), 4))
        width = 0.8 / len(peers)
        for i, peer in enumerate(peers):
            xs, heights, lows, highs = [], [], [], []
            for j, case in enumerate(cases):
                entry = results[case].get(peer, {}).get(metric)
                if not isinstance(entry, dict):
                    continue
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                heights.append(entry["median"])
                lows.append(max(0.0, entry["median"] - entry["min"]))
                highs.append(max(0.0, entry["max"] - entry["median"]))
            if xs:
                ax.bar(xs, heights, width, label=peer, color=COLORS.get(peer), yerr=[lows, highs], capsize=3)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{title}\nmedian of {doc['settings']['reps']}, bars = min–max", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{stem}-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(doc: dict[str, Any], out_dir: Path, stem: str) -> Path:
    written = plots(doc, out_dir, stem)
    text = markdown(doc)
    if written:
        text += "## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written) + "\n"
    path = out_dir / f"{stem}.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    source = Path(sys.argv[1])
    document = json.loads(source.read_text())
    print(write_report(document, source.parent, source.stem))
