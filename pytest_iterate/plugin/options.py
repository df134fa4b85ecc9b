"""The plugin's options: one table, one resolution, one validation.

Every option exists three ways, resolved ONCE per session with this precedence
(the same as :mod:`pytest_iterate.client.config`)::

    --iterate-NAME on the command line > ITERATE_NAME env > iterate_NAME ini key > default

:func:`add_options` registers the table with pytest; :func:`resolve` reads it into a
frozen :class:`IterateOptions` and turns every bad value into a ``pytest.UsageError``
that names the value and what is accepted. Nothing here imports the pipeline: the
module is imported by the plugin on every pytest start.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from pytest_iterate._data import fixtures_dir
from pytest_iterate.client.secret import redact_url
from pytest_iterate.client.values import (
    to_bool,
    to_choice,
    to_env_var_name,
    to_float,
    to_http_url,
    to_int_list,
    to_name,
)
from pytest_iterate.plugin.acceptance.criteria import CRITERIA, CRITERIA_BY_ID

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "OPTIONS",
    "PATH_OPTIONS",
    "RECORD_MODES",
    "IterateOptions",
    "OptionSpec",
    "add_options",
    "is_enabled",
    "resolve",
]

RECORD_MODES = ("none", "once", "new", "all")
SHIPPED_PROFILES = ("v1", "fast", "degraded", "zero")


class OptionSpec(NamedTuple):  # NamedTuples, not dataclasses: imported on every pytest start
    """One row of the table: ``name`` gives ``--iterate-<name>``, ``iterate_<name>``, ``ITERATE_<NAME>``."""

    name: str
    help: str
    default: Any = None
    flag: bool = False  # a switch: --iterate-x (ini/env: true/false)
    multi: bool = False  # repeatable on the CLI; ini linelist; env comma-separated
    metavar: str | None = None

    def escaped(self) -> OptionSpec:
        """The spec with ``%`` doubled in the help (argparse formats help strings with %)."""
        return OptionSpec(
            self.name, self.help.replace("%", "%%"), self.default, self.flag, self.multi, self.metavar
        )

    @property
    def cli(self) -> str:
        return "--iterate" if self.name == "" else f"--iterate-{self.name.replace('_', '-')}"

    @property
    def dest(self) -> str:
        return "iterate" if self.name == "" else f"iterate_{self.name}"

    @property
    def env(self) -> str:
        return "ITERATE" if self.name == "" else f"ITERATE_{self.name.upper()}"


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("", "run the V2 acceptance suite and write benchmark reports", False, flag=True),
    OptionSpec(
        "endpoint", "'mock' (embedded loopback mock) or an OpenAI-compatible base URL", "mock", metavar="URL"
    ),
    OptionSpec("model", "model name sent to the endpoint", "gpt-4o-mini", metavar="NAME"),
    OptionSpec("api_key_env", "environment variable holding the API key", "OPENAI_API_KEY", metavar="VAR"),
    OptionSpec(
        "workload", "workload JSONL file (default: the shipped standard workload)", None, metavar="PATH"
    ),
    OptionSpec(
        "profile", "mock latency profile: v1, fast, degraded, zero or a JSON file", "v1", metavar="NAME"
    ),
    OptionSpec(
        "concurrency",
        "concurrency levels of the sweep, comma-separated; the top one drives the standard run",
        "1,5,10,16",
        metavar="N,N",
    ),
    OptionSpec("report_dir", "folder for the reports", "reports", metavar="DIR"),
    OptionSpec(
        "threshold",
        "override a criterion threshold, e.g. latency.e2e_mean=2.5 (repeatable)",
        (),
        multi=True,
        metavar="ID=VALUE",
    ),
    OptionSpec(
        "criteria", "only run criteria whose id matches these globs, e.g. 'latency.*'", "*", metavar="GLOB"
    ),
    OptionSpec(
        "baseline", "baseline report (file or folder) to gate regressions against", None, metavar="PATH"
    ),
    OptionSpec(
        "compare_fail",
        "regression gate, e.g. p95:10% or error_rate:+0.5 (repeatable)",
        (),
        multi=True,
        metavar="EXPR",
    ),
    OptionSpec(
        "compare_min_delta",
        "noise floor of the regression gate: a latency change smaller than "
        "this many seconds is never a regression",
        "0.005",
        metavar="SECONDS",
    ),
    OptionSpec(
        "save_baseline",
        "also save this run's JSON report here as the next baseline (complete runs only)",
        None,
        metavar="PATH",
    ),
    OptionSpec("record_mode", "cassette mode: none (replay only), once, new, all", "none", metavar="MODE"),
    OptionSpec("cassette", "cassette file to replay/record real-endpoint answers", None, metavar="PATH"),
    OptionSpec("replay_timing", "replay recorded latencies from the cassette", False, flag=True),
)


# the options whose value is a file or folder
PATH_OPTIONS = frozenset(
    spec.cli for spec in OPTIONS if spec.metavar in ("PATH", "DIR") or spec.name in ("profile",)
)


def add_options(parser: pytest.Parser) -> None:
    """Register the table: group "iterate" on the CLI and an ini key per option."""
    group = parser.getgroup("iterate", "pytest-iterate: LLM pipeline acceptance and benchmarks")
    for spec in OPTIONS:
        spec = spec.escaped()
        shown = "" if spec.default in (None, (), False) else f" [default: {spec.default}]"
        if spec.flag:
            group.addoption(
                spec.cli,
                action="store_true",
                default=None,
                dest=spec.dest,
                help=f"{spec.help}{shown} (env {spec.env})",
            )
            parser.addini(spec.dest, f"{spec.help} (true/false)", type="bool", default=None)
        elif spec.multi:
            group.addoption(
                spec.cli,
                action="append",
                default=None,
                dest=spec.dest,
                metavar=spec.metavar,
                help=f"{spec.help} (env {spec.env}, comma-separated)",
            )
            parser.addini(spec.dest, spec.help, type="linelist", default=[])
        else:
            group.addoption(
                spec.cli,
                action="store",
                default=None,
                dest=spec.dest,
                metavar=spec.metavar,
                help=f"{spec.help}{shown} (env {spec.env})",
            )
            parser.addini(spec.dest, spec.help, type="string", default="")


class IterateOptions(NamedTuple):
    """The resolved, validated options of one session (see the module doc for precedence)."""

    enabled: bool = False
    endpoint: str = "mock"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    workload: str | None = None
    profile: str = "v1"
    concurrency: tuple[int, ...] = (1, 5, 10, 16)
    report_dir: Path = Path("reports")
    thresholds: Mapping[str, float] = MappingProxyType({})
    criteria: tuple[str, ...] = ("*",)
    baseline: Path | None = None
    compare_fail: tuple[str, ...] = ()
    compare_min_delta: float = 0.005
    save_baseline: Path | None = None
    record_mode: str = "none"
    cassette: Path | None = None
    replay_timing: bool = False

    @property
    def is_mock(self) -> bool:
        return self.endpoint == "mock"

    @property
    def endpoint_shown(self) -> str:
        """The endpoint as messages and reports show it: credentials in the URL masked."""
        return redact_url(self.endpoint)

    def selected_criteria(self) -> list[str]:
        """The criterion ids matching ``criteria`` globs, in table order."""
        return [c.id for c in CRITERIA if any(fnmatchcase(c.id, g) for g in self.criteria)]

    def threshold_for(self, criterion_id: str) -> float:
        if criterion_id in self.thresholds:
            return self.thresholds[criterion_id]
        return CRITERIA_BY_ID[criterion_id].default


def _raw(config: pytest.Config, spec: OptionSpec, environ: Mapping[str, str]) -> tuple[Any, str]:
    """The winning raw value and where it came from (for messages)."""
    cli = config.getoption(spec.dest, default=None)
    if cli is not None:
        return cli, spec.cli
    if spec.env in environ:
        value: Any = environ[spec.env]
        if spec.multi:
            value = [v for v in value.split(",") if v.strip()]
        return value, spec.env
    try:
        ini = config.getini(spec.dest)
    except ValueError:
        ini = None
    if ini not in (None, "", []):
        return ini, f"ini {spec.dest}"
    return spec.default, "default"


def _usage(source: str, value: Any, accepted: str) -> pytest.UsageError:
    return pytest.UsageError(f"{source}: {value!r} is not valid; {accepted}")


def _parsed(parse: Callable[[object], Any]) -> Callable[[Any, str], Any]:
    """An option parser from a :mod:`pytest_iterate.client.values` parser: its ValueError
    becomes a UsageError naming where the value came from."""

    def parse_option(value: Any, source: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None

    return parse_option


_bool = _parsed(to_bool)


def _endpoint(value: Any, source: str) -> str:
    if str(value).strip() == "mock":
        return "mock"
    try:
        return to_http_url(value)
    except ValueError:
        accepted = "give 'mock' or an http(s):// base URL such as http://127.0.0.1:8000/v1"
        raise _usage(source, value, accepted) from None


def _existing_file(value: Any, source: str) -> str | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise _usage(source, value, "give the path of an existing JSONL workload file")
    return str(path)


def _profile(value: Any, source: str) -> str:
    text = str(value).strip()

    shipped = sorted({p.stem for p in (fixtures_dir() / "profiles").glob("*.json")} | set(SHIPPED_PROFILES))
    if text in shipped or (text.endswith(".json") and Path(text).is_file()):
        return text
    raise _usage(source, value, f"give one of {', '.join(shipped)} or the path of a profile .json file")


def _thresholds(values: Iterable[Any], source: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        text = str(item).strip()
        key, sep, num = text.partition("=")
        key = key.strip()
        if not sep:
            raise _usage(source, item, "give ID=VALUE, e.g. latency.e2e_mean=2.5")
        if key not in CRITERIA_BY_ID:
            raise _usage(source, item, f"unknown criterion {key!r}; known ids: {', '.join(CRITERIA_BY_ID)}")
        try:
            out[key] = to_float(num)
        except ValueError:
            accepted = f"the value after '=' must be a finite number, e.g. {key}=2.5"
            raise _usage(source, item, accepted) from None
    return out


def _globs(value: Any, source: str) -> tuple[str, ...]:
    globs = tuple(g.strip() for g in str(value).split(",") if g.strip())
    if not globs or not any(fnmatchcase(c.id, g) for c in CRITERIA for g in globs):
        raise _usage(source, value, f"the glob matches no criterion; known ids: {', '.join(CRITERIA_BY_ID)}")
    return globs


def _path(value: Any, source: str) -> Path | None:
    if value in (None, ""):
        return None
    return Path(str(value)).expanduser()


def _rules(values: Iterable[Any], source: str) -> tuple[str, ...]:
    # not at module top: this module loads on every pytest start, the harness only when a rule is given
    from pytest_iterate.harness.compare import parse_rule

    rules: list[str] = []
    for item in values:
        text = str(item).strip()
        try:
            parse_rule(text)
        except ValueError as exc:
            raise _usage(
                source, item, f"give METRIC:LIMIT such as p95:10%, mean:+0.05 or error_rate:+0.5 ({exc})"
            ) from None
        rules.append(text)
    return tuple(rules)


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "": _bool,
    "endpoint": _endpoint,
    "model": _parsed(to_name),
    "api_key_env": _parsed(to_env_var_name),
    "workload": _existing_file,
    "profile": _profile,
    "concurrency": _parsed(to_int_list),
    "report_dir": lambda v, s: Path(str(v)).expanduser(),
    "threshold": _thresholds,
    "criteria": _globs,
    "baseline": _path,
    "compare_fail": _rules,
    "compare_min_delta": _parsed(lambda v: to_float(v, minimum=0)),
    "save_baseline": _path,
    "record_mode": _parsed(lambda v: to_choice(v, RECORD_MODES)),
    "cassette": _path,
    "replay_timing": _bool,
}


def is_enabled(config: pytest.Config, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``--iterate`` (or ``ITERATE`` / ini ``iterate``) is on; reads only that option."""
    raw, source = _raw(config, OPTIONS[0], os.environ if environ is None else environ)
    return bool(_bool(raw, source))


def resolve(config: pytest.Config, environ: Mapping[str, str] | None = None) -> IterateOptions:
    """Read every option once (CLI > env > ini > default) and validate it."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        raw, source = _raw(config, spec, env)
        values[spec.name] = _PARSERS[spec.name](raw, source)
    if values["cassette"] is None and values["record_mode"] != "none":
        raise pytest.UsageError(
            f"--iterate-record-mode {values['record_mode']!r} needs --iterate-cassette PATH"
        )
    report_dir: Path = values["report_dir"]
    if not report_dir.is_absolute():
        report_dir = Path(config.invocation_params.dir) / report_dir
    return IterateOptions(
        enabled=values[""],
        endpoint=values["endpoint"],
        model=values["model"],
        api_key_env=values["api_key_env"],
        workload=values["workload"],
        profile=values["profile"],
        concurrency=values["concurrency"],
        report_dir=report_dir,
        thresholds=MappingProxyType(values["threshold"]),
        criteria=values["criteria"],
        baseline=values["baseline"],
        compare_fail=values["compare_fail"],
        compare_min_delta=values["compare_min_delta"],
        save_baseline=values["save_baseline"],
        record_mode=values["record_mode"],
        cassette=values["cassette"],
        replay_timing=values["replay_timing"],
    )
