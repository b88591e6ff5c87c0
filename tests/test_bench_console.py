"""What `fastsiren bench` prints fits the terminal: the tables and targets of stored results
(the checked-in CPU run, every workload and provider), folded to a given width, read back."""

import json
import re
from pathlib import Path

import pytest

from fastsiren.benchmark.cli import console_output
from fastsiren.benchmark.tables import case_label, console_table, providers_in

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "cpu-amd-epyc.json"


@pytest.fixture(scope="module")
def doc():
    return json.loads(RESULTS.read_text())


@pytest.mark.parametrize("width", [100, 80, 60])
def test_every_line_fits(doc, width):
    for targets in (False, True):
        lines = console_output(doc, targets, width).splitlines()
        too_long = [line for line in lines if len(line) > width]
        assert not too_long, too_long[:3]


def test_one_row_per_provider_and_every_case_in_its_own_column(doc):
    text = console_table(doc["results"], 100)
    names = providers_in(doc["results"])
    cases = {case_label(r["d"], r["width"], r["batch"], r["n"]) for r in doc["results"]}
    headers = [line for line in text.splitlines() if line.startswith("provider")]
    seen = set()
    for header in headers:
        columns = re.split(r" {2,}", header.strip())
        assert columns[0] == "provider"
        assert set(columns[1:]) <= cases, columns  # no two headers run together
        seen.update(columns[1:])
    assert seen == cases
    rows = [line.split()[0] for line in text.splitlines() if line.split()
            and line.split()[0] in names]
    assert set(rows) == set(names)


def test_reference_row_shows_its_time_not_a_ratio_of_one(doc):
    text = console_table(doc["results"], 100)
    reference_rows = [line for line in text.splitlines() if line.startswith("autograd ")]
    assert reference_rows and all("ms" in row and "1.00x" not in row for row in reference_rows)
    assert "±" not in text  # spreads live in the Markdown report; "?" marks untrusted rows


def test_targets_are_one_line_unless_asked(doc):
    measured = [t for t in doc["targets"] if t["status"] != "not measured"]
    unjudged = dict(doc, targets=doc["targets"] + [
        {"target": f"target {i}", "status": "not measured", "detail": ""} for i in range(6)])
    short = console_output(unjudged, False, 100).splitlines()
    summary = [line for line in short if line.startswith("targets:")]
    assert len(summary) == 1 and "not measured" in summary[0] and "--targets" in summary[0]
    assert not any(t["target"] in "\n".join(short) for t in measured)

    full = " ".join(console_output(unjudged, True, 100).split())  # unfolded
    assert all(f"{t['status']} {t['target']}" in full for t in measured)
    assert full.count("not measured") == 2  # the summary and the one line that counts them
