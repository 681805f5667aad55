"""The descriptions the MLflow UI shows (markdown in MLflow's ``mlflow.note.content`` tag):
the experiment's says how its runs are organised, a sweep's parent run's holds the sweep's
results table, so that the answer is on the first page the printed link opens.

Plain text builders: no MLflow import; ``trainables.sweep_tracking`` writes them.
"""

from __future__ import annotations

import math
from typing import Any

from trainables import tracking_schema as schema

# MLflow keeps at most this many characters of a tag value (8000): a longer results
# table is cut at a row boundary, and says where the rest is.
MAX_NOTE_CHARS = 7500
# The first line of the experiment's description: a description that starts otherwise was
# written by someone else and is left alone.
EXPERIMENT_NOTE_TITLE = ("**One parent run per sweep: open it for the sweep's results table, expand it (+) "
                         "for its trials.**")
# Test metrics of a trial in its parent's results table, in this order, where present.
TABLE_TEST_METRICS = {
    "test/acc": "ACC", "test/closed_acc": "closed ACC", "test/ea": "EA", "test/bleu4": "BLEU-4",
    "test/rouge_l": "ROUGE-L", "test/cider": "CIDEr", "test/nonword_rate": "non-words %",
}


def experiment_note() -> str:
    """How a sweep's runs are laid out (trainables/tracking_schema.py has every name)."""
    t = schema
    return f"""{EXPERIMENT_NOTE_TITLE}

How the SEVLM sweeps' runs are organised:

* **One parent run per sweep** (a `python sweeps/alpha_search.py` or `python sweeps/ablations.py` command; \
`make sweep`), named after the sweep. Its **description holds the sweep's results table**; its artifacts \
hold `{t.ARTIFACT_SWEEP_RESULTS}`, `{t.ARTIFACT_SWEEP_BEST}`, `{t.ARTIFACT_SWEEP_SPEC}` and the report \
(`report/report.html`: tables, significance tests, figures), built at the end of the sweep or by \
`python -m analysis SWEEP_NAME`.
* **One child run per trial**, named `<sweep>_<trial id>`: expand the parent run (**+** beside its name) to see them. \
A trial run holds the whole configuration as params, `train/*` and `val/*` metrics at every evaluation, the \
`test/*` metrics of its best-validation checkpoint, `predictions/test.csv`, `samples/` and `final_metrics.json`.
* **Tags**: `{t.TAG_SWEEP_NAME}` (every run of a sweep), `{t.TAG_ROLE}` (`{t.ROLE_PARENT}` or `{t.ROLE_TRIAL}`), \
`{t.TAG_SWEEP_KIND}`, `{t.TAG_METRIC}` (the metric the sweep optimises); ablation trials `{t.TAG_VARIANT}` and \
`{t.TAG_SEED}`; the alpha search's paper point `{t.TAG_IS_PAPER_CONFIG}`. \
Search box: ``tags.`{t.TAG_SWEEP_NAME}` = 'NAME'``.
* **Status**: FINISHED, FAILED (out of retries), KILLED (stopped early by ASHA, or the sweep was interrupted: \
`--resume` continues it; tag `{t.TAG_END_REASON}` says which).
"""


def parent_note_running(sweep_name: str, sweep_kind: str, metric: str, total_trials: Any = None) -> str:
    trials = f"{total_trials} trials, " if total_trials else ""
    return (f"**Sweep `{sweep_name}`** ({sweep_kind}, {trials}optimising `{metric}`) is running or was "
            f"stopped before its end: its results table appears here when it ends. Its trials are the "
            f"child runs (expand this run in the runs table).")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):  # scores in percent to one decimal; rates and small values to 3 digits
        return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value).replace("|", "/")


def parent_note(*, sweep_name: str, sweep_kind: str, metric: str, status: str, counts: dict[str, int],
                rows: list[dict[str, Any]], columns: dict[str, str] | None = None,
                best: dict[str, Any] | None = None, storage: str | None = None) -> str:
    """The sweep's outcome: counts, the best trial, and one row per trial (best first)
    with the varying config (``columns``: config key -> header), the optimised metric and
    the main test metrics; an interrupted sweep's ``--resume`` command (``storage``: its
    ``--storage``)."""
    columns = dict(columns or {})
    ended = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in
                      ("finished", "failed", "stopped_early", "interrupted", "not_started") if counts.get(k))
    planned = counts.get("planned", counts.get("total", len(rows)))
    # The UI shows the first lines of a description until "Show more": the answer first.
    lines = [f"**Sweep `{sweep_name}`** ({sweep_kind}, optimising `{metric}`): {status}, "
             f"{ended or 'no trial ended'} (of {planned} trials)."]
    row = next((r for r in rows if best and r.get("trial_id") == best.get("trial_id")), None)
    if best and row is not None:
        config = ", ".join(f"{header} {_cell(row.get(key))}" for key, header in columns.items())
        tests = ", ".join(f"{name} {_cell(row[m])}" for m, name in TABLE_TEST_METRICS.items() if m in row)
        lines.append(f"**Best: trial `{best['trial_id']}`**, {metric} {_cell(row.get(metric))}"
                     + (f": {config}" if config else "") + (f"; test {tests}" if tests else "") + ".")
    if status == schema.STATUS_KILLED:
        where = f" --storage {storage}" if storage else ""
        lines.append(f"Interrupted: `python sweeps/{sweep_kind}.py --resume --name {sweep_name}{where}` continues it.")
    tests = [m for m in TABLE_TEST_METRICS if any(m in r for r in rows)]
    header = ["trial", "status", *columns.values(), metric, *(TABLE_TEST_METRICS[m] for m in tests)]
    ordered = sorted(rows, key=lambda r: -r[metric] if isinstance(r.get(metric), (int, float))
                     and not math.isnan(r[metric]) else math.inf)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ordered:
        state = row.get("state") or str(row.get("status", "")).lower()
        cells = [row.get("trial_id"), state, *(row.get(k) for k in columns), row.get(metric),
                 *(row.get(m) for m in tests)]
        table.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    footer = (f"\n{metric}: the trial's best validation value (its tested checkpoint); test metrics in percent "
              f"(CIDEr ×100). Every column: artifact `{schema.ARTIFACT_SWEEP_RESULTS}`; the report: artifact "
              f"`report/report.html` (`python -m analysis {sweep_name}` builds it).")
    text = "\n\n".join(lines) + "\n\n"
    kept = table[:2]
    for line in table[2:]:
        if len(text) + len("\n".join(kept + [line])) + len(footer) + 80 > MAX_NOTE_CHARS:
            left = len(table) - len(kept)
            kept.append(f"\n({left} more trials in `{schema.ARTIFACT_SWEEP_RESULTS}`)")
            break
        kept.append(line)
    return text + "\n".join(kept) + "\n" + footer
