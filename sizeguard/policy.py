"""OPA client for sizeguard's policy decisions, failing closed.

OPA is the only evaluator of sizeguard's rules (``policies/``). This module asks it, over its
REST API, for the two decisions the rest of sizeguard needs and turns every way that can go
wrong into a *deny*:

- :meth:`PolicyClient.changeset_decision` -> ``POST /v1/data/sizeguard/changeset/decision``
  -> :class:`ChangesetDecision` (used by the MCP server before it asks a human);
- :meth:`PolicyClient.admission_decision` -> ``POST /v1/data/sizeguard/admission/decision``
  -> :class:`AdmissionDecision` (used by the admission webhook);
- :class:`AsyncPolicyClient` offers the same two methods as coroutines, for the ASGI webhook.

Fail closed: OPA unreachable, a timeout, an HTTP error, an answer that is not JSON, an
undefined ``result`` (the policies are not loaded) or an answer that does not validate
against the decision models all give a deny decision whose reason reads
``sizeguard: the policy engine (OPA) is unavailable: <detail>; the change is denied``.
Nothing is retried: a retry would multiply the latency the API server waits for, and a deny
is the safe answer. Each decision is logged as one structlog event, ``policy.decision``,
with codes and counts only (never the input, the approval or a token).

Why plain httpx and not opa-python-client 3.0.0 (evaluated; it is still a dependency in
pyproject.toml, but sizeguard does not use it):

- Its retries are on by default and hidden from the caller: the sync client mounts a
  urllib3 ``Retry(total=2, backoff_factor=0.3)`` adapter (connection errors and HTTP
  500/502/504), the async client loops itself on the same statuses. With a 2 s timeout one
  decision can take more than 6 s, longer than an admission webhook should hold a request.
- Its timeout is one value per client, not per request (``query_rule`` takes none), and the
  async client applies it as an aiohttp session-wide total.
- Sync and async are two HTTP stacks (requests and aiohttp + aiofiles) on top of the httpx
  sizeguard already uses; the async client has no session until it is entered with
  ``async with`` (``query_rule`` on a fresh client raises AttributeError).
- It takes host and port, not a URL, and returns untyped ``dict`` (no ``py.typed``), so the
  strict validation below would have to be written anyway.
- Failures surface as three exception families (its own, requests', aiohttp's) that a
  fail-closed wrapper would all have to catch.

httpx gives the sync client per-request timeouts, pooled keep-alive connections and one
exception hierarchy. The async client (the webhook's, one question per guarded admission
request on loopback) sends through :mod:`sizeguard.http_pool` instead: httpx's own cost per
request (about 1.2 ms of Python on the project's 2-core machine) was four times OPA's
round trip.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import anyio
import httpx
import structlog
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from sizeguard.http_pool import HttpPool, HttpProtocolError

DEFAULT_OPA_URL = "http://127.0.0.1:8181"
"""Where OPA listens when neither an argument nor ``OPA_URL`` says otherwise."""

DEFAULT_TIMEOUT = 2.0
"""Seconds allowed for one decision (connect, send and each read; the total, in async)."""

CHANGESET_DECISION = "sizeguard/changeset/decision"
ADMISSION_DECISION = "sizeguard/admission/decision"

APPROVAL_LEVELS = 1
"""The ``approval_levels`` a change set decision must carry: its ``requires`` comes from
policies/sizeguard/changeset/approval.rego (levels confirmation < typed_confirmation <
authenticated_approver < two_approvers). A decision without it is from older policies."""

UNAVAILABLE_CODE = "policy_unavailable"
"""Violation code of a change set decision made up because OPA gave no usable answer."""

_log = structlog.get_logger("sizeguard.policy")


def default_opa_url() -> str:
    """``OPA_URL`` from the environment, else :data:`DEFAULT_OPA_URL`."""
    return os.environ.get("OPA_URL") or DEFAULT_OPA_URL


def unavailable_reason(detail: str) -> str:
    """The reason given when OPA cannot decide, e.g. "... unavailable: timed out ...; ..."."""
    return f"sizeguard: the policy engine (OPA) is unavailable: {detail}; the change is denied"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Finding(_Strict):
    """One violation or warning of the change set policy."""

    code: str
    target: str
    """``"<Kind>/<namespace>/<name>"``, or ``""`` for change-set-wide findings."""
    message: str


class ChangesetDecision(_Strict):
    """``data.sizeguard.changeset.decision``: may this change set go to a human at all?"""

    allowed: bool
    risk: Literal["low", "medium", "high", "critical"]
    violations: list[Finding]
    warnings: list[Finding]
    requires: list[str]
    """What approving needs beyond a confirmation, e.g. ``["typed_confirmation"]``."""
    approval_levels: int = 0
    """The version of the approval levels ``requires`` names (approval.rego:
    :data:`APPROVAL_LEVELS`); absent (0) in policies older than the approval page, whose
    ``requires`` never asks for an authenticated approver — such a decision is refused."""

    _engine_error: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _allowed_only_without_violations(self) -> ChangesetDecision:
        if self.allowed and self.violations:
            raise ValueError("allowed is true but there are violations")
        return self

    @property
    def engine_error(self) -> str | None:
        """Why OPA gave no usable answer, when this decision is the fail-closed deny."""
        return self._engine_error

    @property
    def typed_confirmation_required(self) -> bool:
        return "typed_confirmation" in self.requires

    @classmethod
    def unavailable(cls, detail: str) -> ChangesetDecision:
        """The deny used when OPA gives no usable answer."""
        decision = cls(
            allowed=False,
            risk="critical",
            violations=[
                Finding(code=UNAVAILABLE_CODE, target="", message=unavailable_reason(detail))
            ],
            warnings=[],
            requires=[],
        )
        decision._engine_error = detail
        return decision


class AdmissionDecision(_Strict):
    """``data.sizeguard.admission.decision``: does the cluster admit this request?"""

    allowed: bool
    reasons: list[str]
    """Each starts with ``"sizeguard:"``; on a deny they say what to do."""
    warnings: list[str]

    _engine_error: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _denied_with_a_reason(self) -> AdmissionDecision:
        if not self.allowed and not self.reasons:
            raise ValueError("a deny must give at least one reason")
        return self

    @property
    def engine_error(self) -> str | None:
        """Why OPA gave no usable answer, when this decision is the fail-closed deny."""
        return self._engine_error

    @classmethod
    def unavailable(cls, detail: str) -> AdmissionDecision:
        """The deny used when OPA gives no usable answer."""
        decision = cls(allowed=False, reasons=[unavailable_reason(detail)], warnings=[])
        decision._engine_error = detail
        return decision


D = TypeVar("D", ChangesetDecision, AdmissionDecision)


class _Answer(BaseModel, Generic[D]):
    """OPA's response body; ``result`` is absent when the decision is undefined."""

    model_config = ConfigDict(strict=True, extra="ignore")

    result: D | None = None
    decision_id: str | None = None


@dataclass(frozen=True)
class _Kind(Generic[D]):
    name: str
    path: str
    model: type[D]
    answer: type[_Answer[D]]


_CHANGESET = _Kind("changeset", CHANGESET_DECISION, ChangesetDecision, _Answer[ChangesetDecision])
_ADMISSION = _Kind("admission", ADMISSION_DECISION, AdmissionDecision, _Answer[AdmissionDecision])

PolicyInput = Mapping[str, Any] | BaseModel


class _Base:
    """What the sync and async clients share: URLs, encoding, interpretation, logging."""

    def __init__(self, url: str | None, timeout: float, token: str | None) -> None:
        base = (url or default_opa_url()).rstrip("/")
        parsed = httpx.URL(base)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) URL for OPA: {base!r}")
        self.url = base
        self.timeout = timeout
        self.display_url = str(parsed.copy_with(username=None, password=None))
        """The URL without credentials, for logs and messages."""
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _endpoint(self, kind: _Kind[D]) -> str:
        return f"{self.url}/v1/data/{kind.path}"

    @staticmethod
    def _encode(policy_input: PolicyInput) -> bytes:
        document = (
            policy_input.model_dump(mode="json", by_alias=True)
            if isinstance(policy_input, BaseModel)
            else policy_input
        )
        return json.dumps({"input": document}, separators=(",", ":"), allow_nan=False).encode()

    def _interpret(self, kind: _Kind[D], status: int, content: bytes) -> tuple[D, str | None]:
        """The decision in a response; raises :class:`_UnusableAnswerError` if there is none."""
        if status != 200:
            detail = _opa_error(content)
            raise _UnusableAnswerError(f"HTTP {status} from {self.display_url}{detail}")
        try:
            answer = kind.answer.model_validate_json(content)
        except ValidationError as exc:
            raise _UnusableAnswerError(
                f"malformed answer from {self.display_url}: {_first_error(exc)}"
            ) from None
        if answer.result is None:
            raise _UnusableAnswerError(
                f"the decision data.{kind.path.replace('/', '.')} is undefined "
                f"(are the sizeguard policies loaded into {self.display_url}?)"
            )
        levels = getattr(answer.result, "approval_levels", APPROVAL_LEVELS)
        if levels != APPROVAL_LEVELS:
            raise _UnusableAnswerError(
                f"the policies loaded into {self.display_url} are older than this sizeguard "
                "(their change set decision names no approval levels, so it could let an "
                "answer in the MCP client approve a production change); load this sizeguard's "
                "policies"
                if levels == 0
                else f"the policies loaded into {self.display_url} use approval levels version "
                f"{levels}, this sizeguard knows version {APPROVAL_LEVELS}; upgrade sizeguard"
            )
        return answer.result, answer.decision_id

    def _describe_transport_error(self, exc: Exception, limit: float | None = None) -> str:
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            seconds = self.timeout if limit is None else limit
            return f"no answer from {self.display_url} within {seconds:.3g}s"
        return f"cannot reach {self.display_url}: {type(exc).__name__}: {exc}".rstrip(": ")

    def _finish(
        self,
        kind: _Kind[D],
        started: float,
        decision: D | None = None,
        decision_id: str | None = None,
        error: str | None = None,
    ) -> D:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        if decision is None:
            detail = error or "unknown error"
            decision = kind.model.unavailable(detail)
            _log.warning(
                "policy.decision",
                decision=kind.name,
                allowed=False,
                engine_error=detail,
                opa_url=self.display_url,
                duration_ms=elapsed_ms,
            )
            return decision
        fields: dict[str, Any] = {
            "decision": kind.name,
            "allowed": decision.allowed,
            "opa_url": self.display_url,
            "duration_ms": elapsed_ms,
        }
        if decision_id:
            fields["decision_id"] = decision_id
        if isinstance(decision, ChangesetDecision):
            fields["risk"] = decision.risk
            fields["violations"] = sorted({v.code for v in decision.violations})
            fields["warnings"] = sorted({w.code for w in decision.warnings})
            fields["requires"] = decision.requires
        else:
            fields["reasons"] = len(decision.reasons)
            fields["warnings"] = len(decision.warnings)
        _log.info("policy.decision", **fields)
        return decision


class PolicyUnavailableError(Exception):
    """OPA gave no usable value for a :meth:`PolicyClient.query` (the message says why)."""


class _UnusableAnswerError(Exception):
    """OPA answered, but not with a usable decision."""


def _opa_error(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("code")
        return f" ({code}: {body['message']})" if isinstance(code, str) else f" ({body['message']})"
    return ""


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {first['msg']}{more}"


class PolicyClient(_Base):
    """Synchronous client; one pooled HTTP connection set, safe to share between threads.

    >>> with PolicyClient("http://127.0.0.1:8181") as opa:  # doctest: +SKIP
    ...     decision = opa.changeset_decision({"changes": [...], "context": {...}})
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, timeout, token)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers=self._headers,
            transport=transport,
            trust_env=False,
        )

    def changeset_decision(self, policy_input: PolicyInput) -> ChangesetDecision:
        """``data.sizeguard.changeset.decision`` for a change set plus its context."""
        return self._decide(_CHANGESET, policy_input)

    def admission_decision(self, policy_input: PolicyInput) -> AdmissionDecision:
        """``data.sizeguard.admission.decision`` for one admission request."""
        return self._decide(_ADMISSION, policy_input)

    def _decide(self, kind: _Kind[D], policy_input: PolicyInput) -> D:
        started = time.perf_counter()
        try:
            body = self._encode(policy_input)
        except (TypeError, ValueError) as exc:
            return self._finish(kind, started, error=f"the policy input is not JSON: {exc}")
        try:
            response = self._client.post(self._endpoint(kind), content=body)
        except httpx.HTTPError as exc:
            return self._finish(kind, started, error=self._describe_transport_error(exc))
        try:
            decision, decision_id = self._interpret(kind, response.status_code, response.content)
        except _UnusableAnswerError as exc:
            return self._finish(kind, started, error=str(exc))
        return self._finish(kind, started, decision, decision_id)

    def query(self, path: str, policy_input: PolicyInput) -> Any:
        """The value of ``data.<path>`` (``path`` with slashes) for an input, for a document
        that is not a decision (e.g. ``sizeguard/plan/floors``). Raises
        :class:`PolicyUnavailableError`, whose message is a sentence, when OPA gives none."""
        started = time.perf_counter()
        error: str | None
        try:
            response = self._client.post(
                f"{self.url}/v1/data/{path}", content=self._encode(policy_input)
            )
        except httpx.HTTPError as exc:
            error = self._describe_transport_error(exc)
        else:
            error = (
                None
                if response.status_code == 200
                else f"HTTP {response.status_code} from {self.display_url}"
                + _opa_error(response.content)
            )
        answer: Any = None
        if error is None:
            try:
                answer = json.loads(response.content).get("result")
            except (ValueError, AttributeError):
                error = f"malformed answer from {self.display_url}"
        if error is None and answer is None:
            error = (
                f"data.{path.replace('/', '.')} is undefined "
                f"(are the sizeguard policies loaded into {self.display_url}?)"
            )
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        if error is not None:
            _log.warning("policy.query", path=path, engine_error=error, duration_ms=elapsed_ms)
            raise PolicyUnavailableError(f"the policy engine (OPA) gave no {path}: {error}")
        _log.info("policy.query", path=path, duration_ms=elapsed_ms)
        return answer

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


DEFAULT_POOL_SIZE = 32
"""Keep-alive connections the async client keeps to OPA (the webhook's decisions in flight)."""


class AsyncPolicyClient(_Base):
    """Asynchronous client for the ASGI webhook; the timeout also bounds each call's total.

    Its connections to OPA are pooled and kept alive (:class:`sizeguard.http_pool.HttpPool`,
    ``pool_size`` connections, one write per question: about 0.3 ms per decision on loopback
    where ``httpx`` took 1.5 ms); a decision never waits for a new TCP connection once the pool
    is warm. A call may shorten the timeout (``timeout=``: the webhook gives what is left of
    the API server's deadline), never lengthen it. ``transport`` (an httpx transport, e.g.
    ``httpx.MockTransport`` in tests) sends through httpx instead.

    Create it inside the running event loop and close it there (``await client.aclose()``
    or ``async with``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        super().__init__(url, timeout, token)
        self._client: httpx.AsyncClient | None = None
        self._pool: HttpPool | None = None
        if transport is not None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout),
                headers=self._headers,
                transport=transport,
                trust_env=False,
            )
        else:
            self._pool = HttpPool(self.url, size=pool_size, headers=self._headers)

    async def changeset_decision(
        self, policy_input: PolicyInput, *, timeout: float | None = None
    ) -> ChangesetDecision:
        """``data.sizeguard.changeset.decision`` for a change set plus its context."""
        return await self._decide(_CHANGESET, policy_input, timeout)

    async def admission_decision(
        self, policy_input: PolicyInput, *, timeout: float | None = None
    ) -> AdmissionDecision:
        """``data.sizeguard.admission.decision`` for one admission request."""
        return await self._decide(_ADMISSION, policy_input, timeout)

    async def _post(self, kind: _Kind[D], body: bytes) -> tuple[int, bytes]:
        if self._pool is not None:
            answer = await self._pool.post(f"/v1/data/{kind.path}", body)
            return answer.status, answer.body
        assert self._client is not None
        response = await self._client.post(self._endpoint(kind), content=body)
        return response.status_code, response.content

    async def _decide(self, kind: _Kind[D], policy_input: PolicyInput, timeout: float | None) -> D:
        started = time.perf_counter()
        limit = self.timeout if timeout is None else max(0.0, min(timeout, self.timeout))
        try:
            body = self._encode(policy_input)
        except (TypeError, ValueError) as exc:
            return self._finish(kind, started, error=f"the policy input is not JSON: {exc}")
        try:
            with anyio.fail_after(limit):
                status, content = await self._post(kind, body)
        except (httpx.HTTPError, TimeoutError, OSError, HttpProtocolError, EOFError) as exc:
            return self._finish(kind, started, error=self._describe_transport_error(exc, limit))
        try:
            decision, decision_id = self._interpret(kind, status, content)
        except _UnusableAnswerError as exc:
            return self._finish(kind, started, error=str(exc))
        return self._finish(kind, started, decision, decision_id)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncPolicyClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
