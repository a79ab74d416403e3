"""krr's JSON in and out, the other formats, and the `scan` command's plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sizeguard.cli import main
from sizeguard.report_formats import KrrParseError, from_krr, render, to_krr

# Real output of krr 1.29 (`krr simple -q -f json`) for a three-workload cluster.
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "krr" / "simple-3-workloads.json"


@pytest.fixture
def document() -> dict:  # type: ignore[type-arg]
    data: dict = json.loads(FIXTURE.read_text())  # type: ignore[type-arg]
    return data


def test_krr_report_round_trips(document: dict) -> None:  # type: ignore[type-arg]
    result = from_krr(document)
    assert result.score == document["score"] == 76
    assert result.strategy == "simple"
    out = to_krr(result)
    assert out["scans"] == document["scans"]
    assert out["score"] == document["score"]
    assert out["strategy"]["name"] == "simple"
    assert out["strategy"]["settings"] == document["strategy"]["settings"]
    assert result.errors == []


def test_krr_values_are_parsed(document: dict) -> None:  # type: ignore[type-arg]
    result = from_krr(document)
    web, api, _ = result.scans
    assert web.recommended.requests["cpu"].value == 0.292
    assert web.recommended.limits["cpu"].value is None
    assert api.recommended.requests["cpu"].value == "?"
    assert api.object.hpa is not None and api.object.hpa.scales_on_cpu
    assert [p.name for p in web.object.pods] == ["web-7d4b9c5f6d-fghij", "web-7d4b9c5f6d-abcde"]


def test_a_wrong_score_is_flagged(document: dict) -> None:  # type: ignore[type-arg]
    document["score"] = 99
    result = from_krr(document)
    assert "differs" in result.errors[0]["message"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "missing 'scans'"),
        ({"scans": {}}, "not a list"),
        ({"scans": [{"object": {}}]}, "scans[0].object: missing 'allocations'"),
        (
            {
                "scans": [
                    {
                        "object": {
                            "allocations": {},
                            "warnings": ["NoPodsFound"],
                            **{k: "x" for k in ("name", "container", "namespace")},
                        },
                        "recommended": {
                            sel: {r: {"value": None} for r in ("cpu", "memory")}
                            for sel in ("requests", "limits")
                        },
                    }
                ]
            },
            "scans[0].object.warnings: 'NoPodsFound' is not one of krr's warnings",
        ),
    ],
)
def test_broken_reports_say_where(doc: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(KrrParseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_krr(doc)


def test_formats(document: dict) -> None:  # type: ignore[type-arg]
    result = from_krr(document)
    table = render(result, "table")
    assert "500m -> 292m" in table and "1 -> unset" in table and "Score: 76/100" in table
    assert "cpu: HPA detected" in table and "\x1b[" not in table
    coloured = render(result, "table", colour=True)
    assert "\x1b[33m" in coloured and "\x1b[32m" in coloured
    lines = render(result, "csv").splitlines()
    assert lines[0].startswith("Namespace,Name,Pods,Old Pods,Type,Container,Severity,CPU Diff")
    assert len(lines) == 4 and lines[1].startswith(
        "demo,web,2,0,Deployment,web,WARNING,-416m,(-208m) 500m -> 292m,1.0 -> unset,"
    )
    as_yaml = yaml.safe_load(render(result, "yaml"))
    assert as_yaml["scans"] == document["scans"]
    assert json.loads(render(result, "json"))["sizeguard"]["cost"]["currency"] == "USD"
    with pytest.raises(ValueError):
        render(result, "xml")


def test_scan_from_krr_through_the_cli(
    document: dict,  # type: ignore[type-arg]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "krr.json"
    source.write_text(json.dumps(document))
    assert main(["scan", "--from-krr", str(source), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scans"] == document["scans"]
    report = tmp_path / "out.csv"
    assert main(["scan", "--from-krr", str(source), "-f", "csv", "--output", str(report)]) == 0
    assert report.read_text().count("\n") == 4


def test_scan_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["scan", "--from-krr", str(bad)]) == 1
    assert "is not a krr JSON report" in capsys.readouterr().err
    assert main(["scan", "--from-krr", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_scan_needs_prometheus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    assert main(["scan"]) == 1
    assert "PROMETHEUS_URL" in capsys.readouterr().err


def test_krr_style_flags_are_accepted_with_underscores() -> None:
    from sizeguard.cli import build_parser

    args = build_parser().parse_args(
        [
            "scan",
            "--cpu_percentile",
            "90",
            "--history-duration",
            "48",
            "--allow_hpa",
            "--strategy",
            "simple_limit",
        ]
    )
    assert (args.cpu_percentile, args.history_duration, args.allow_hpa) == (90, 48, True)
    assert args.strategy == "simple-limit"


def test_krrs_error_entries_are_told_in_sentences(
    document: dict,  # type: ignore[type-arg]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    document["errors"] = [
        {"name": "HistoryRangeError"},
        {"name": "NotEnoughHistoryAvailable", "retry_after": "2026-07-30T10:00:00"},
        {"name": "SomethingNew", "cluster": "east"},
    ]
    source = tmp_path / "krr.json"
    source.write_text(json.dumps(document))
    assert main(["scan", "--from-krr", str(source)]) == 0  # krr's notes, not a failure
    captured = capsys.readouterr()
    errors = [line for line in captured.out.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: krr could not tell how much history Prometheus holds (HistoryRangeError), so "
        "it computed the recommendations without checking that there is enough",
        "error: Prometheus does not hold enough history yet for the strategy "
        "(NotEnoughHistoryAvailable); krr suggests running again after 2026-07-30T10:00:00",
        'error: krr reported SomethingNew ({"cluster": "east"})',
    ]
    assert captured.err.count("sizeguard: ") == 3 and "NotEnoughHistoryAvailable" in captured.err
