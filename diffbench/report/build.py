"""Build a run's report from its result rows: ``summary.csv``, ``report.md``, ``index.html`` and ``figures/``.

A report is a header (run ids, profiles, devices, versions, provenance, seeds, counts, failed cells), then one part
per family: its sections, its seed repeats (mean over seeds and a 95% interval, when cells ran at several seeds;
also in ``seeds.csv``), then the generic table of every metric by cell parameters. This module orchestrates and
renders; it names no family. Each family's sections come from its family module (``Family.sections``, see
:mod:`diffbench.families`), found when a report is built, so importing this module loads no family.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diffbench.io import atomic_write_text
from diffbench.report.sections import (
    PARAM_PREFIX,
    FigureRef,
    Note,
    Section,
    SectionBuilder,
    Table,
    format_value,
    generic_section,
    latest_rows,
    rows_to_frame,
    summary_frame,
)
from diffbench.report.seeds import SEEDS_FILE, run_seed_summary, seed_section
from diffbench.results import FAILURES_FILE, load_run

SUMMARY_FILE = "summary.csv"
MARKDOWN_FILE = "report.md"
HTML_FILE = "index.html"
TABLES_DIR = "tables"
MAX_TABLE_ROWS = 200  # longer tables are cut in the page; the full table is always in tables/<name>.csv


# --- failures ---------------------------------------------------------------------------------------------


def load_failures(run_dir: Path) -> list[dict]:
    """The run's failed cells from ``failures.json`` (``[]`` when absent). An unreadable file is reported as a
    failure entry rather than dropped, so a report never hides that something went wrong."""
    path = Path(run_dir) / FAILURES_FILE
    if not path.is_file():
        return []
    try:
        failures = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [{"cell": str(path), "family": None, "message": f"unreadable {FAILURES_FILE}: {exc}"}]
    if not isinstance(failures, list):
        return [{"cell": str(path), "family": None, "message": f"{FAILURES_FILE} is not a JSON list"}]
    return failures


# --- rendering --------------------------------------------------------------------------------------------


def _format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).apply(lambda column: column.map(format_value))


@dataclass
class _Header:
    run_ids: list[str]
    profiles: list[str]
    devices: list[str]
    versions: list[str]
    sources: list[str]
    seeds: list[str]
    num_rows: int
    num_cells: int
    families: list[str]
    nonfinite: pd.DataFrame
    failures: list[dict]


def _source(provenance: dict) -> str:
    """``abc1234 (dirty) on host`` from a row's provenance; blank when the row has none (older runs)."""
    sha = provenance.get("git_sha")
    if not sha and not provenance.get("host"):
        return ""
    text = str(sha)[:12] if sha else "no git"
    if provenance.get("git_dirty"):
        text += " (dirty)"
    return f"{text} on {provenance.get('host') or '?'}"


def _header(df: pd.DataFrame, raw_rows: list[dict], failures: list[dict]) -> _Header:
    def distinct(column: str) -> list[str]:
        return sorted({str(v) for v in df[column].dropna()}) if column in df else []

    versions = sorted(
        {", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items())) for r in raw_rows} - {""}
    )
    scalar = df[df["artifact"].isna()]
    nonfinite = scalar[scalar["value"].isna()][["family", "cell", "metric"]]
    return _Header(
        run_ids=distinct("run_id"),
        profiles=distinct("profile"),
        devices=distinct("device"),
        versions=versions,
        sources=sorted({_source(r.get("provenance") or {}) for r in raw_rows} - {""}),
        seeds=[str(s) for s in sorted({int(s) for s in df["seed"].dropna()})] if "seed" in df else [],
        num_rows=len(df),
        num_cells=len(df.drop_duplicates(["run_id", "cell"])),
        families=distinct("family"),
        nonfinite=nonfinite,
        failures=failures,
    )


def _failures_frame(failures: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"cell": f.get("cell"), "family": f.get("family"), "message": f.get("message")} for f in failures],
        columns=["cell", "family", "message"],
    )


def _markdown_table(frame: pd.DataFrame, max_rows: int | None = MAX_TABLE_ROWS) -> str:
    shown = frame if max_rows is None else frame.head(max_rows)
    text = _format_frame(shown)

    def cell(value: str) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in text.itertuples(index=False)]
    if len(shown) < len(frame):
        lines.append(f"\n*First {len(shown)} of {len(frame)} lines.*")
    return "\n".join(lines)


def _html_table(frame: pd.DataFrame, max_rows: int | None = MAX_TABLE_ROWS) -> str:
    shown = frame if max_rows is None else frame.head(max_rows)
    out = _format_frame(shown).to_html(index=False, escape=True, border=0)
    if len(shown) < len(frame):
        out += f"<p><em>First {len(shown)} of {len(frame)} lines.</em></p>"
    return out


def _render_markdown(head: _Header, parts: list[tuple[str, list[Section]]]) -> str:
    out = [f"# diffbench report: {', '.join(head.run_ids) or '(no rows)'}", ""]
    out += [
        f"- **Run id(s):** {', '.join(head.run_ids) or '-'}",
        f"- **Profile(s):** {', '.join(head.profiles) or '-'}",
        f"- **Device(s):** {', '.join(head.devices) or '-'}",
        f"- **Versions:** {' | '.join(head.versions) or '-'}",
        f"- **Code:** {' | '.join(head.sources) or '-'}",
        f"- **Seed(s):** {', '.join(head.seeds) or '-'}",
        f"- **Cells:** {head.num_cells}, **rows:** {head.num_rows}, **families:** {', '.join(head.families) or '-'}",
        f"- **Failed cells:** {len(head.failures)}",
        "",
    ]
    if head.failures:
        out += [
            f"## FAILED CELLS ({len(head.failures)})",
            "",
            _markdown_table(_failures_frame(head.failures), None),
            "",
        ]
    if len(head.nonfinite):
        out += [f"## Non-finite values ({len(head.nonfinite)})", "", _markdown_table(head.nonfinite), ""]
    out += [f"Every row: [{SUMMARY_FILE}]({SUMMARY_FILE}). Blank table entries: not recorded or non-finite.", ""]
    for family, sections in parts:
        out += [f"## {family}", ""]
        for section in sections:
            out += [f"### {section.title}", ""]
            for item in section.items:
                if isinstance(item, Note):
                    out += [item.text, ""]
                elif isinstance(item, FigureRef):
                    data = item.path.removesuffix(".png") + ".csv"
                    name = Path(item.path).stem
                    out += [f"![{name}]({item.path})", "", f"{item.caption} Data: [{data}]({data})", ""]
                else:
                    csv = f"{TABLES_DIR}/{item.name}.csv" if item.name else ""
                    link = f" Full table: [{csv}]({csv})" if csv else ""
                    out += [f"{item.caption}{link}", "", _markdown_table(item.frame), ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; }
.meta td, .meta th { text-align: left; }
.failures { border: 2px solid #c00; background: #fff0f0; padding: 0.5em 1em; }
.failures h2 { color: #c00; margin-top: 0.2em; }
.warn { border: 2px solid #c80; background: #fff8e8; padding: 0.5em 1em; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
"""


def _render_html(head: _Header, parts: list[tuple[str, list[Section]]]) -> str:
    esc = html.escape
    title = f"diffbench report: {', '.join(head.run_ids) or '(no rows)'}"
    meta = [
        ("Run id(s)", ", ".join(head.run_ids)),
        ("Profile(s)", ", ".join(head.profiles)),
        ("Device(s)", ", ".join(head.devices)),
        ("Versions", " | ".join(head.versions)),
        ("Code", " | ".join(head.sources)),
        ("Seed(s)", ", ".join(head.seeds)),
        ("Cells", str(head.num_cells)),
        ("Rows", str(head.num_rows)),
        ("Families", ", ".join(head.families)),
        ("Failed cells", str(len(head.failures))),
    ]
    out = [
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="meta">',
    ]
    out += [f"<tr><th>{esc(k)}</th><td>{esc(v or '-')}</td></tr>" for k, v in meta]
    out.append("</table>")
    if head.failures:
        out += [
            f'<div class="failures"><h2>FAILED CELLS ({len(head.failures)})</h2>',
            _html_table(_failures_frame(head.failures), None),
            "</div>",
        ]
    if len(head.nonfinite):
        out += [
            f'<div class="warn"><h2>Non-finite values ({len(head.nonfinite)})</h2>',
            _html_table(head.nonfinite),
            "</div>",
        ]
    out.append(
        f'<p>Every row: <a href="{SUMMARY_FILE}">{SUMMARY_FILE}</a>. '
        "Blank table entries: not recorded or non-finite.</p>"
    )
    for family, sections in parts:
        out.append(f'<h2 id="{esc(family)}">{esc(family)}</h2>')
        for section in sections:
            out.append(f"<h3>{esc(section.title)}</h3>")
            for item in section.items:
                if isinstance(item, Note):
                    out.append(f"<p>{esc(item.text)}</p>")
                elif isinstance(item, FigureRef):
                    data = item.path.removesuffix(".png") + ".csv"
                    out.append(
                        f'<figure><img src="{esc(item.path)}" alt="{esc(item.caption)}"><figcaption>'
                        f'{esc(item.caption)} Data: <a href="{esc(data)}">{esc(data)}</a></figcaption></figure>'
                    )
                else:
                    csv = f"{TABLES_DIR}/{esc(item.name)}.csv" if item.name else ""
                    link = f' Full table: <a href="{csv}">{csv}</a>' if csv else ""
                    out += [f"<p><em>{esc(item.caption)}</em>{link}</p>", _html_table(item.frame)]
    out.append("</body></html>")
    return "\n".join(out)


# --- the entry point --------------------------------------------------------------------------------------


def family_sections() -> dict[str, SectionBuilder]:
    """Each discovered family's section builder (imports the family modules: called when a report is built)."""
    from diffbench.families import discover

    return {name: family.sections for name, family in discover().items() if family.sections is not None}


def build_report(
    run_dir: Path,
    rows: list[dict] | None = None,
    failures: list[dict] | None = None,
    sections: Mapping[str, SectionBuilder] | None = None,
) -> Path:
    """Write ``summary.csv``, ``tables/*.csv``, ``figures/*``, ``report.md`` and ``index.html`` into ``run_dir``
    (and ``seeds.csv`` when some metric was measured at several seeds).

    ``sections`` maps a family name to its section builder (default: :func:`family_sections`); a family without
    one gets the generic table only.

    ``rows`` default to the run's saved rows (:func:`diffbench.results.load_run`), ``failures`` to its
    ``failures.json``. Returns the path of ``report.md``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = load_run(run_dir)
    if failures is None:
        failures = load_failures(run_dir)
    df = rows_to_frame(rows)
    if len(df):
        df = latest_rows(df)
    atomic_write_text(run_dir / SUMMARY_FILE, summary_frame(df).to_csv(index=False))
    seeds = run_seed_summary(df)
    if (seeds["n_seeds"] >= 2).any():  # a run with seed repeats (--seeds): every metric's mean and interval
        atomic_write_text(run_dir / SEEDS_FILE, seeds.to_csv(index=False))

    builders = family_sections() if sections is None else sections
    parts = []
    for family in sorted(df["family"].dropna().unique()):
        family_df = df[df["family"] == family]
        family_df = family_df.drop(
            columns=[c for c in family_df if c.startswith(PARAM_PREFIX) and family_df[c].isna().all()]
        )
        built: list[Section] = []
        if family in builders:
            try:
                built += builders[family](family_df, run_dir)
            except Exception as exc:  # one broken section must not cost the run its report (and its tables)
                message = f"The {family} sections could not be built: {type(exc).__name__}: {exc}"
                built.append(Section("Section error", [Note(message)]))
        built += seed_section(family_df, run_dir)
        built += generic_section(family_df, run_dir)
        parts.append((family, built))
    for _, built in parts:
        for section in built:
            for item in section.items:
                if isinstance(item, Table) and item.name:
                    atomic_write_text(run_dir / TABLES_DIR / f"{item.name}.csv", item.frame.to_csv(index=False))

    head = _header(df, rows, failures)
    atomic_write_text(run_dir / HTML_FILE, _render_html(head, parts))
    report = run_dir / MARKDOWN_FILE
    atomic_write_text(report, _render_markdown(head, parts))
    return report
