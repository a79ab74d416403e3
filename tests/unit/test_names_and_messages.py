"""Names checked before they reach an API path, and the API server's words scrubbed before
they reach people and logs (review 18b: N3, L-d, L-e, L-f)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sizeguard.cli import main
from sizeguard.cluster import Cluster, ClusterError
from sizeguard.texts import bad_namespace_names, bad_object_name, one_line
from sizeguard.workloads import WorkloadReader, WorkloadReadError

from .api_stub import json_server
from .test_truthful_units import kubeconfig_for

NOT_NAMES = ["..", ".", "", "a/b", "kube-system/secrets", "Shop", "a" * 64, "a\nb", "-a"]


@contextmanager
def recording_server(answer: tuple[int, object]) -> Iterator[tuple[str, list[str]]]:
    """An API server answering ``answer`` (status, JSON document) to every GET and
    recording the paths it was asked for."""
    with json_server(lambda _path: answer) as served:
        yield served


EMPTY_LIST = (200, {"kind": "List", "items": [], "metadata": {}})


def test_names_that_are_not_dns_labels_are_named_in_a_sentence() -> None:
    assert bad_namespace_names(["shop", "kube-system", "a" * 63, "0"]) is None
    for name in NOT_NAMES:
        assert bad_namespace_names([name]) == (
            f"{name!r} is not a namespace name (a namespace name is a DNS label: at most 63 "
            "lowercase letters, digits and '-', beginning and ending with a letter or digit)"
        )
    both = bad_namespace_names(["..", "ok", "a/b"])
    assert both is not None and both.startswith("'..', 'a/b' are not namespace names (")
    assert bad_object_name("web.v2") is None and bad_object_name("web") is None
    for name in ("..", ".", "", "a/b", "a..b", "Web"):
        assert bad_object_name(name, "a Deployment") == (
            f"{name!r} is not a name of a Deployment (lowercase letters, digits, '-' and '.', "
            "beginning and ending with a letter or digit, at most 253)"
        )


@pytest.mark.parametrize("name", NOT_NAMES)
def test_a_bad_namespace_name_is_refused_before_any_request(tmp_path: Path, name: str) -> None:
    """``..`` read /api/v1/ (and listed the whole cluster as one namespace); ``.`` and ``""``
    read the list of namespaces; ``a/b`` addressed another resource."""
    with recording_server(EMPTY_LIST) as (url, seen):
        config = kubeconfig_for(url, tmp_path)
        with Cluster.from_kubeconfig(config) as cluster:
            with pytest.raises(ClusterError, match="is not a namespace name") as refused:
                cluster.namespace_labels(["shop", name])
            assert refused.value.kind == "invalid"
            with pytest.raises(ClusterError, match="is not a namespace name"):
                cluster.cluster_state([name])
            with pytest.raises(ClusterError, match="is not a namespace name"):
                cluster.read_live("Deployment", name, "web")
            if len(name) < 64:  # 64 letters may name a Deployment (a DNS subdomain)
                with pytest.raises(ClusterError, match="is not a name of a Deployment"):
                    cluster.read_live("Deployment", "shop", name)
        with (
            WorkloadReader(config) as reader,
            pytest.raises(WorkloadReadError, match="is not a namespace name"),
        ):
            reader.workloads([name])
    assert seen == []


def test_the_cli_refuses_a_bad_namespace_in_a_sentence_and_asks_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with recording_server(EMPTY_LIST) as (url, seen):
        config = str(kubeconfig_for(url, tmp_path))
        for name in ("..", "kube-system/secrets"):
            argv = ["scan", "-n", "shop", "-n", name, "--kubeconfig", config]
            assert main([*argv, "--prometheus-url", url]) == 1
            err = capsys.readouterr().err
            assert err == (
                f"sizeguard: {name!r} is not a namespace name (a namespace name is a DNS label: "
                "at most 63 lowercase letters, digits and '-', beginning and ending with a "
                "letter or digit); nothing was scanned\n"
            )
    assert seen == []


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--target-utilization", "nan"], "'nan' is not a target utilization"),
        (["--target-utilization", "-50"], "'-50' is not a target utilization"),
        (["--target-utilization", "101"], "'101' is not a target utilization"),
        (["--target-utilization", "inf"], "'inf' is not a target utilization"),
        (["--cpu-min", "-1"], "'-1' is not a CPU minimum: give whole millicores, 0 or more"),
        (["--cpu-min", "ten"], "'ten' is not a CPU minimum"),
    ],
)
def test_odd_plan_numbers_are_refused_in_a_sentence(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["scan", *flags, "--from-krr", "/nonexistent"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_kubeconfig_that_is_not_yaml_is_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nnot: [yaml\n")
    for namespaces in ([], ["-n", "shop"]):
        argv = ["scan", *namespaces, "--kubeconfig", str(config)]
        assert main([*argv, "--prometheus-url", "http://127.0.0.1:9"]) == 1
        assert capsys.readouterr().err == (
            f"sizeguard: cannot use {config}: it is not a kubeconfig (YAML error at line 3)\n"
        )


@pytest.mark.parametrize(
    "metadata",
    [["a"], "x", {"labels": ["a"]}, {"labels": {"env": 5}}, {"labels": {"x": None}}],
)
def test_namespace_metadata_that_is_not_labels_of_strings_fails_closed_in_words(
    tmp_path: Path, metadata: object
) -> None:
    """The production rules read these labels: a Namespace whose metadata is odd is not read
    as one without labels (nor are its values turned into text)."""
    with (
        recording_server((200, {"kind": "Namespace", "metadata": metadata})) as (url, _),
        Cluster.from_kubeconfig(kubeconfig_for(url, tmp_path)) as cluster,
        pytest.raises(ClusterError) as refused,
    ):
        cluster.namespace_labels(["shop"])
    assert refused.value.kind == "server_error"
    assert str(refused.value) == (
        f"cannot read Namespace shop: the API server at {url} sent metadata that is not an "
        "object with labels of strings, so the production rules cannot classify it"
    )


def test_the_api_servers_message_reaches_people_without_tokens_or_newlines(
    tmp_path: Path,
) -> None:
    message = (
        "Bearer sk-SECRET-TOKEN-123 <script>\nline2\r\x1b[31m Authorization: Bearer "
        "abc.DEF-456 token=zzz9 password: hunter2"
    )
    status = (401, {"kind": "Status", "code": 401, "message": message})
    with (
        recording_server(status) as (url, _),
        Cluster.from_kubeconfig(kubeconfig_for(url, tmp_path)) as cluster,
        pytest.raises(ClusterError) as refused,
    ):
        cluster.namespace_labels(["shop"])
    text = str(refused.value)
    for secret in ("sk-SECRET-TOKEN-123", "abc.DEF-456", "zzz9", "hunter2"):
        assert secret not in text
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text.endswith(
        "(API server: Bearer <redacted> <script> line2 [31m Authorization: <redacted> "
        "token=<redacted> password: <redacted>)"
    )


def test_one_line_keeps_words_that_are_not_credentials() -> None:
    assert one_line("the token expired; retry") == "the token expired; retry"
    assert one_line("Basic dXNlcjpwYXNz, then") == "Basic <redacted>, then"
    assert one_line('{"token": "abc"}') == '{"token": "<redacted>"}'
    assert one_line("a\n\n b\u2028c") == "a b c"
    assert one_line("x" * 20, limit=5) == "xxxxx…"
