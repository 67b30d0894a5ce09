"""The README's chart: recall@10 and query latency against ef_search on the demo dataset.

Materializes the demo spec (``datasets.yaml``: 3,000 Debian package summaries) through Dagster into
a temporary QUIVER_HOME, with every asset check and the evaluation asset, prints what the checks
report, and copies the evaluation's PNG to ``docs/recall_vs_ef_search.png``. ``make chart`` runs it
(about a minute on a laptop CPU, most of it embedding).

    CHART_OUT=path.png   where to write the chart (default docs/recall_vs_ef_search.png)
    CHART_SAMPLE=300     rows used as queries
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from dagster import DagsterInstance, materialize

from quiver.assets import dataset_assets, dataset_checks, evaluation_asset
from quiver.assets.evaluation import report_path
from quiver.pipelines.definitions import build_resources
from quiver.resources.spec import load_spec


def main() -> int:
    spec = load_spec(ROOT / "datasets.yaml")
    out = Path(os.environ.get("CHART_OUT") or ROOT / "docs" / "recall_vs_ef_search.png")
    sample = int(os.environ.get("CHART_SAMPLE", "300"))
    with tempfile.TemporaryDirectory(prefix="quiver-chart-") as home:
        for dataset in spec.datasets:
            started = time.perf_counter()
            result = materialize(
                [*dataset_assets(dataset), *dataset_checks(dataset), evaluation_asset(dataset)],
                resources=build_resources(spec, Path(home)),
                instance=DagsterInstance.ephemeral(),
                run_config={"ops": {f"{dataset.name}__evaluation": {"config": {"sample": sample}}}},
                raise_on_error=False,
            )
            print(f"{dataset.name}: materialized in {time.perf_counter() - started:.1f} s, success={result.success}")
            for check in result.get_asset_check_evaluations():
                verdict = "passed" if check.passed else f"FAILED ({check.severity.value})"
                print(f"  {check.asset_key.to_user_string()}:{check.check_name} {verdict}: {check.description}")
            for event in result.get_asset_materialization_events():
                materialization = event.event_specific_data.materialization
                if materialization.asset_key.path[-1] == "evaluation":
                    print(materialization.metadata["results"].value)
            chart = report_path(home, dataset.name)
            if not chart.exists():
                print(f"{dataset.name}: no chart was written", file=sys.stderr)
                return 1
            target = out if len(spec.datasets) == 1 else out.with_name(f"{out.stem}_{dataset.name}{out.suffix}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chart, target)
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
