"""One table from a run's results: a row per measure, quiver / vss / usearch, ratios and goals."""

from __future__ import annotations

from tests.benchmarks.peers.stats import fmt, mib, spread

QUIVER_CRASH = (
    "13 kill points x 3 seeded trials (10 in make test-slow), all recovered: "
    "tests/crash/test_crash_matrix.py, README 'Durability and recovery'"
)


def _median(stat: dict) -> float:
    return stat["median"]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def build_table(r: dict) -> list[dict]:
    rows = []

    def add(measure, quiver="", vss="", usearch="", ratio="", goal="", verdict=""):
        rows.append(
            {
                "measure": measure,
                "quiver": quiver,
                "vss": vss,
                "usearch": usearch,
                "ratio": ratio,
                "goal": goal,
                "verdict": verdict,
            }
        )

    build = {name: spread([b["build_s"] for b in r["build"][name]]) for name in ("quiver", "vss", "usearch")}
    add(
        "build s (N vectors already in DuckDB)",
        fmt(build["quiver"]),
        fmt(build["vss"]),
        fmt(build["usearch"]),
        f"q/vss {_ratio(_median(build['quiver']), _median(build['vss']))}, q/usearch {_ratio(_median(build['quiver']), _median(build['usearch']))}",
        "no slower than vss",
        _verdict(_median(build["quiver"]) <= _median(build["vss"])),
    )

    query = r["query"]
    lat = {name: query[name]["latency"] for name in ("quiver", "vss", "usearch")}
    reader = query["quiver"]["reader_latency"]
    recall = {name: query[name]["recall_at_10"] for name in lat}
    q50, v50, u50 = (_median(lat[n]["p50_ms"]) for n in ("quiver", "vss", "usearch"))
    add(
        "query p50 ms (quiver: quiver.search, rows)",
        fmt(lat["quiver"]["p50_ms"]),
        fmt(lat["vss"]["p50_ms"]),
        fmt(lat["usearch"]["p50_ms"]),
        f"vss/q {v50 / q50:.1f}x, q/usearch {q50 / u50:.2f}x",
        ">=10x faster than vss at >= recall; <=1.2x usearch",
        f"vs vss {_verdict(v50 / q50 >= 10 and recall['quiver'] >= recall['vss'])}; vs usearch {_verdict(q50 / u50 <= 1.2)}",
    )
    add(
        "query p50 ms (quiver: IndexReader.search, keys only)",
        fmt(reader["p50_ms"]),
        "",
        fmt(lat["usearch"]["p50_ms"]),
        f"q/usearch {_median(reader['p50_ms']) / u50:.2f}x",
        "<=1.2x usearch",
        _verdict(_median(reader["p50_ms"]) / u50 <= 1.2),
    )
    if "batch_per_query_s" in query["quiver"]:
        batch = {n: spread([t * 1000 for t in query[n]["batch_per_query_s"]]) for n in ("quiver", "usearch")}
        add(
            f"query ms per query, a batch of {lat['quiver']['queries_per_pass']} (quiver.search_batch, rows; usearch: one search call)",
            fmt(batch["quiver"]),
            "",
            fmt(batch["usearch"]),
            f"q/usearch {_median(batch['quiver']) / _median(batch['usearch']):.2f}x",
            "<=1.2x usearch",
            _verdict(_median(batch["quiver"]) / _median(batch["usearch"]) <= 1.2),
        )
    add(
        "query p95 ms",
        fmt(lat["quiver"]["p95_ms"]),
        fmt(lat["vss"]["p95_ms"]),
        fmt(lat["usearch"]["p95_ms"]),
        f"vss/q {_median(lat['vss']['p95_ms']) / _median(lat['quiver']['p95_ms']):.1f}x",
    )
    add(
        "recall@10 vs exact, ef_search=64",
        f"{recall['quiver']:.4f}",
        f"{recall['vss']:.4f}",
        f"{recall['usearch']:.4f}",
        "",
        "equal or better than vss",
        _verdict(recall["quiver"] >= recall["vss"]),
    )
    add("vss plan uses HNSW_INDEX_SCAN", "", str(query["vss"]["plan_uses_hnsw"]))
    after = r["query_after_updates"]
    add(
        "recall@10 after the 3 update rounds (queries answering < 10 rows)",
        *(
            f"{after[n]['recall_at_10']:.4f} ({after[n]['short_answers']} of {after[n]['queries']})"
            for n in ("quiver", "vss")
        ),
        "",
        "",
        "equal or better than vss",
        _verdict(after["quiver"]["recall_at_10"] >= after["vss"]["recall_at_10"]),
    )

    _update_rows(r, add)
    _size_rows(r, add)

    cold = r["cold"]
    large = r["plan"]["rows"] >= 1_000_000
    add(
        "cold start s (new process -> first answer)",
        fmt(cold["quiver"]["seconds"]),
        fmt(cold["vss"]["seconds"]),
        fmt(cold["usearch"]["seconds"]),
        f"vss/q {_median(cold['vss']['seconds']) / _median(cold['quiver']['seconds']):.1f}x",
        f"< 2 s at 1M vectors (vss first answer: {r['cold']['vss']['runs'][0]['hits']} rows)",
        _verdict(_median(cold["quiver"]["seconds"]) < 2)
        if large
        else f"(at 1M only) {_verdict(_median(cold['quiver']['seconds']) < 2)} here",
    )
    add("crash: kill -9 after commit, before checkpoint", QUIVER_CRASH, crash_summary(r["crash"]))
    emb = r["embedding"]
    embedded = [u["counts"]["embedded"] for u in r["update"]["quiver"]]
    add(
        f"embedding rows/s ({emb['model']}, {emb['texts']} real texts)",
        fmt(emb["rows_per_s"]),
        "(brings vectors)",
        "(brings vectors)",
    )
    add(
        "rows embedded per refresh round (of the changed rows)",
        f"{fmt(spread(embedded))} of {r['update']['changed_per_round']:,}",
        "",
        "",
        "",
        "only inserted + updated rows",
        _verdict(all(e == 2 * r["update"]["changed_per_round"] // 3 for e in embedded)),
    )
    return rows


def _update_rows(r: dict, add) -> None:
    up = r["update"]
    quiver, vss = up["quiver"], up["vss"]["rounds"]
    raw = up["raw_bytes_per_round"]
    changed = up["changed_per_round"]
    per = 1000 / changed
    q_total = spread([u["total"]["write_bytes"] * per / 2**20 for u in quiver])
    q_segment = spread([u["segment"]["write_bytes"] * per / 2**20 for u in quiver])
    v_total = spread([u["written"]["write_bytes"] * per / 2**20 for u in vss])
    raw_per = spread([b * per / 2**20 for b in raw])
    q_vs_raw = spread([u["total"]["write_bytes"] / b for u, b in zip(quiver, raw)])
    seg_vs_raw = spread([u["segment"]["write_bytes"] / b for u, b in zip(quiver, raw)])
    add(
        f"update: seconds per round ({changed:,} changed: 1/3 each insert, update, delete)",
        fmt(spread([u["total"]["seconds"] for u in quiver])),
        fmt(spread([u["seconds"] for u in vss])),
        "",
        f"vss/q {_median(spread([u['seconds'] for u in vss])) / _median(spread([u['total']['seconds'] for u in quiver])):.1f}x",
    )
    add(
        "update: MiB written per 1,000 changed rows (write_bytes; quiver: DuckDB + segment)",
        fmt(q_total),
        fmt(v_total),
        "",
        f"raw changed rows {fmt(raw_per)} MiB; q/raw {fmt(q_vs_raw)}; vss/q {_median(v_total) / _median(q_total):.1f}x",
        "<= 3x raw changed bytes",
        _verdict(_median(q_vs_raw) <= 3),
    )
    add(
        "update: of which quiver's log segment (MiB per 1,000)",
        fmt(q_segment),
        "",
        "",
        f"segment/raw {fmt(seg_vs_raw)}",
        "<= 3x raw changed bytes",
        _verdict(_median(seg_vs_raw) <= 3),
    )
    add(
        "update: vss DML before CHECKPOINT (MiB per 1,000)",
        "",
        fmt(spread([u["dml_written"]["write_bytes"] * per / 2**20 for u in vss])),
    )
    snap = up["quiver_snapshot_after"]
    add(
        "quiver snapshot after the 3 rounds (s, MiB written; the sensor's, not per change)",
        f"{snap['seconds']:.2f} s, {mib(snap['write_bytes']):.1f} MiB",
    )


def _size_rows(r: dict, add) -> None:
    raw = r["raw_bytes"]
    built_q = r["build"]["quiver"][-1]["bytes"]
    q_build = built_q["duckdb"] + built_q["index_dir"]
    v = r["build"]["vss"][-1]["bytes_after_close"]
    v_build = v["db"] + v["wal"]
    u_build = r["build"]["usearch"][-1]["bytes"] + r["raw_text_bytes"]
    add(
        f"size after build MiB (raw text + f32 vectors = {mib(raw):.1f} MiB)",
        f"{mib(q_build):.1f} (DuckDB {mib(built_q['duckdb']):.1f} + index {mib(built_q['index_dir']):.1f})",
        f"{mib(v_build):.1f}",
        f"{mib(u_build):.1f} (index file + raw text)",
        f"q/raw {q_build / raw:.2f}x, vss/raw {v_build / raw:.2f}x, usearch/raw {u_build / raw:.2f}x",
        "<= 2.5x raw (f32 index)",
        _verdict(q_build / raw <= 2.5),
    )
    for label, sizes in r.get("variant_bytes", {}).items():
        total = sizes["duckdb"] + sizes["index_dir"]
        add(
            f"size after build MiB, quiver with {label}",
            f"{mib(total):.1f} (index {mib(sizes['index_dir']):.1f}); recall@10 {sizes['recall_at_10']:.4f}",
            "",
            "",
            f"q/raw {total / raw:.2f}x",
        )
    last_q = r["update"]["quiver"][-1]["bytes"]
    after_snap = r["update"]["quiver_snapshot_after"]["bytes"]
    last_v = r["update"]["vss"]["bytes_after_close"]
    q_after, v_after = last_q["duckdb"] + last_q["index_dir"], last_v["db"] + last_v["wal"]
    add(
        "size after the 3 update rounds MiB",
        f"{mib(q_after):.1f}; {mib(after_snap['duckdb'] + after_snap['index_dir']):.1f} after the next snapshot",
        f"{mib(v_after):.1f}",
        "",
        f"q/raw {q_after / raw:.2f}x, vss/raw {v_after / raw:.2f}x; vss grew {mib(v_after - v_build):+.1f} MiB, quiver {mib(q_after - q_build):+.1f} MiB",
    )


def crash_summary(crash: dict) -> str:
    parts = [
        f"writer rc {crash['writer_returncode']} after committing {crash['inserted']} inserts into {crash['base_rows']:,} rows"
    ]
    for label, key in (("vss loaded first", "load_first"), ("without vss", "no_load")):
        steps = crash[key]["steps"]
        said = "; ".join(
            f"{s['step']}: {s['value'] if s['ok'] else s['error']}" for s in steps if s["step"] != "indexes"
        )
        parts.append(f"[{label}] {said}")
    return " | ".join(parts)


def render(r: dict, table: list[dict]) -> str:
    start, end = r["machine_at_start"], r["machine_at_end"]
    head = (
        f"\nquiver vs DuckDB vss vs raw usearch, BENCH_SIZE={r['size']}: {r['plan']['rows']:,} rows of {r['corpus']}, "
        f"384 dims, cosine, M={r['params']['m']}, ef_construction={r['params']['ef_construction']}, ef_search={r['params']['ef_search']}\n"
        f"machine: {start['cores']} cores, load average {start['loadavg']} at start, {end['loadavg']} at end; "
        f"run took {r['seconds']:.0f} s. Figures: median (min-max) of {r['plan']['builds']} builds, "
        f"{r['plan']['passes']} query passes of {r['plan']['queries']} queries, {r['plan']['rounds']} update rounds, "
        f"{r['plan']['colds']} cold starts.\n"
    )
    columns = ["measure", "quiver", "vss", "usearch", "ratio", "goal", "verdict"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join(str(row[c]).replace("|", "/") for c in columns) + " |")
    return head + "\n" + "\n".join(lines)
