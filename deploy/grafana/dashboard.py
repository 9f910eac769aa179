"""The torchkafka Grafana dashboard, generated with the Grafana Foundation SDK.

    python deploy/grafana/dashboard.py            # print the dashboard JSON
    python deploy/grafana/dashboard.py --write    # write deploy/grafana/dashboards/torchkafka.json

Edit this file, not the JSON: tests/deploy/test_monitoring.py regenerates the
dashboard and fails when the committed JSON differs. Every query uses only
metrics the worker exports (docs/worker.md, "Metrics and health") and
Prometheus's ``up`` of the scrape job ``torchkafka-worker``; docs/monitoring.md
describes the panels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    GridPos,
    Threshold,
    ThresholdsMode,
)

OUTPUT = Path(__file__).parent / "dashboards" / "torchkafka.json"
UID = "torchkafka"
TITLE = "torchkafka"
#: The datasource provisioned by provisioning/datasources/prometheus.yml.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
JOB = 'job="torchkafka-worker"'
#: Grafana's rate window: at least four scrape intervals, widening with the time range.
WINDOW = "$__rate_interval"


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )


def ref_ids(queries: list[tuple[str, str]]) -> list[prometheus.Dataquery]:
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def graph(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    width: int = 12,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(list(ref_ids(queries)))
        .grid_pos(GridPos(h=8, w=width))
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .fill_opacity(10)
    )
    if stacked:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common.StackingMode.NORMAL)
        ).fill_opacity(40)
    return panel


def single_stat(
    title: str, description: str, expr: str, unit: str, red_from: float | None
) -> stat.Panel:
    steps = [Threshold(value=None, color="green")]
    if red_from is not None:
        steps.append(Threshold(value=red_from, color="red"))
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .with_target(query(expr, title))
        .grid_pos(GridPos(h=4, w=4))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            dashboard_builders.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)
        )
    )


def quantiles(metric: str, selector: str = "") -> list[tuple[str, str]]:
    buckets = f"sum by (le) (rate({metric}_bucket{selector}[{WINDOW}]))"
    return [(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)}") for q in (0.5, 0.99)]


def overview() -> list[stat.Panel]:
    return [
        single_stat(
            "Workers up",
            "Workers Prometheus scraped successfully (job torchkafka-worker).",
            f"count(up{{{JOB}}} == 1) or vector(0)",
            "none",
            None,
        ),
        single_stat(
            "Workers down",
            "Targets of job torchkafka-worker that did not answer the last scrape.",
            f"count(up{{{JOB}}} == 0) or vector(0)",
            "none",
            1,
        ),
        single_stat(
            "Paused workers",
            "Workers whose partitions are paused now: intake full, or Redis away.",
            "sum(torchkafka_paused) or vector(0)",
            "none",
            1,
        ),
        single_stat(
            "Redis outage",
            "Workers whose last Redis call failed after its retries.",
            "sum(torchkafka_redis_outage) or vector(0)",
            "none",
            1,
        ),
        single_stat(
            "Dedup state lost",
            "Workers holding their work because Redis lost its done-marks.",
            "sum(torchkafka_dedup_state_lost) or vector(0)",
            "none",
            1,
        ),
        single_stat(
            "Consumer lag",
            "Records not yet read, summed over every assigned partition.",
            "sum(torchkafka_consumer_lag) or vector(0)",
            "short",
            None,
        ),
    ]


def throughput() -> list[timeseries.Panel]:
    return [
        graph(
            "Throughput",
            "Records read, results published and dead letters published per second, all workers.",
            "reqps",
            [
                (f"sum(rate(torchkafka_messages_consumed_total[{WINDOW}]))", "consumed"),
                (
                    f'sum(rate(torchkafka_messages_produced_total{{outcome="result"}}[{WINDOW}]))',
                    "results",
                ),
                (
                    "sum(rate(torchkafka_messages_produced_total"
                    f'{{outcome="dead_letter"}}[{WINDOW}]))',
                    "dead letters",
                ),
            ],
        ),
        graph(
            "Dead letters by reason",
            "Records handed to the dead-letter topic per second, by reason.",
            "reqps",
            [
                (
                    f"sum by (reason) (rate(torchkafka_dead_letters_total[{WINDOW}])) > 0",
                    "{{reason}}",
                )
            ],
            stacked=True,
        ),
        graph(
            "Dedup hits",
            "Records skipped by the dedup gate per second: id already done, or repeated "
            "within one poll.",
            "reqps",
            [(f"sum(rate(torchkafka_dedup_skipped_total[{WINDOW}]))", "skipped")],
        ),
        graph(
            "Retries by kind",
            "Things tried again per second: Redis calls, parked records, split batches, "
            "produces after a full queue.",
            "ops",
            [(f"sum by (kind) (rate(torchkafka_retries_total[{WINDOW}])) > 0", "{{kind}}")],
        ),
    ]


def latency() -> list[timeseries.Panel]:
    return [
        graph(
            "End-to-end latency (results)",
            "From the poll that returned a record to the broker's acknowledgement of its "
            "result, all workers.",
            "s",
            quantiles("torchkafka_end_to_end_seconds", '{outcome="result"}'),
            width=8,
        ),
        graph(
            "Queue wait",
            "Per request, from entering the batcher to its model call.",
            "s",
            quantiles("torchkafka_queue_wait_seconds"),
            width=8,
        ),
        graph(
            "Inference time",
            "Successful model calls, stacking included.",
            "s",
            quantiles("torchkafka_inference_seconds"),
            width=8,
        ),
        graph(
            "Batch size",
            "Inputs per successful model call: the mean and the median.",
            "none",
            [
                (
                    f"sum(rate(torchkafka_batch_size_sum[{WINDOW}])) / "
                    f"sum(rate(torchkafka_batch_size_count[{WINDOW}]))",
                    "mean",
                ),
                *quantiles("torchkafka_batch_size")[:1],
            ],
        ),
        graph(
            "Consumer lag per partition",
            "Records not yet read, per assigned partition (updated every 5 s by its worker).",
            "short",
            [("sum by (topic, partition) (torchkafka_consumer_lag)", "{{topic}}/{{partition}}")],
        ),
    ]


def health() -> list[timeseries.Panel]:
    return [
        graph(
            "Paused and Redis outage per worker",
            "1 while a worker's partitions are paused, or its Redis calls fail.",
            "none",
            [
                ("max by (instance) (torchkafka_paused)", "paused {{instance}}"),
                ("max by (instance) (torchkafka_redis_outage)", "redis outage {{instance}}"),
                ("max by (instance) (torchkafka_dedup_state_lost)", "state lost {{instance}}"),
            ],
        ),
        graph(
            "Workers",
            "Targets of job torchkafka-worker, and those that answered.",
            "none",
            [
                (f"count(up{{{JOB}}})", "scraped targets"),
                (f"sum(up{{{JOB}}})", "up"),
            ],
        ),
    ]


def build() -> dashboard_builders.Dashboard:
    board = (
        dashboard_builders.Dashboard(TITLE)
        .uid(UID)
        .description("torchkafka workers: throughput, latency, lag, dead letters, Redis.")
        .tags(["torchkafka", "kafka", "pytorch"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
    )
    board = board.with_row(dashboard_builders.Row("Overview"))
    for panel in overview():
        board = board.with_panel(panel)
    board = board.with_row(dashboard_builders.Row("Throughput"))
    for graph_panel in throughput():
        board = board.with_panel(graph_panel)
    board = board.with_row(dashboard_builders.Row("Latency and lag"))
    for graph_panel in latency():
        board = board.with_panel(graph_panel)
    board = board.with_row(dashboard_builders.Row("Health"))
    for graph_panel in health():
        board = board.with_panel(graph_panel)
    return board


def render() -> str:
    """The dashboard as the JSON Grafana provisions (stable: sorted keys, fixed ids)."""
    model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    for number, panel in enumerate(model["panels"], start=1):
        panel["id"] = number
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the torchkafka Grafana dashboard.")
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT.name}")
    args = parser.parse_args()
    text = render()
    if args.write:
        OUTPUT.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
