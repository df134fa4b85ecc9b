"""Generate fixtures/workloads/designs.jsonl, long_context.jsonl and long_context_scripts.jsonl.

    .venv/bin/python scripts/make_workloads.py            # rewrite both files
    .venv/bin/python scripts/make_workloads.py --check    # exit 1 if the files differ

designs.jsonl: 70 unique design requests plus 30 exact duplicates (same id, same
content) of earlier ones = 100 lines, shuffled with a fixed seed (a duplicate always
comes after its first occurrence). Languages: mostly python, some others. Sizes vary
from one short requirement to a dozen long ones.

long_context.jsonl: 8 requests whose pasted specification (many long requirement
lines) makes the prompt 2.5k-6k tokens, so prompt + max_tokens overflows a 2,048-token
window unless the token guard truncates, splits or refuses.
"""

# ruff: noqa: RUF001  (specification texts in other scripts on purpose: full-width punctuation)

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "workloads"
SEED = 20260204
UNIQUE = 70
DUPLICATES = 30

SUBJECTS = [
    "rate limiter",
    "LRU cache",
    "retry helper",
    "CSV report builder",
    "URL shortener",
    "event bus",
    "priority job queue",
    "config loader",
    "feature flag store",
    "inventory tracker",
    "markdown table renderer",
    "unit converter",
    "bank account ledger",
    "text tokenizer",
    "dependency graph resolver",
    "file watcher",
    "circuit breaker",
    "pagination helper",
    "password strength checker",
    "matrix utilities",
    "time window aggregator",
    "JSON schema validator",
    "library checkout system",
    "chess move validator",
    "tiny HTTP router",
    "log line parser",
    "shopping cart",
    "undo/redo stack",
    "sparse vector",
    "trie autocomplete",
    "temperature sensor smoother",
    "invoice calculator",
    "cron expression parser",
    "bloom filter",
    "rolling file logger",
]
VERBS = ["Design", "Implement", "Build", "Write"]
REQUIREMENTS = [
    "expose a small public API with type hints",
    "handle empty input without raising",
    "be safe to use from several threads",
    "keep memory bounded by a configurable limit",
    "reject invalid arguments with a clear ValueError message",
    "support serialization to and from JSON",
    "keep operations O(log n) or better",
    "allow injecting a clock for tests",
    "log nothing by default",
    "include a short usage example in the docstring",
    "provide an async variant of the main operation",
    "return results in a stable, documented order",
    "make every public class immutable where it can be",
    "support a dry-run mode that changes nothing",
    "count how often each operation was called",
]
LONG_REQUIREMENT_TAIL = (
    " The behaviour must be covered by tests that exercise normal input, boundary values and"
    " malformed input, and the error messages must name the offending value."
)
CONSTRAINTS = [
    "standard library only",
    "no global mutable state",
    "Python 3.11",
    "at most 80 lines",
    "no third-party dependencies",
    "pure functions where possible",
    "deterministic output",
]
LANGUAGES = ["python"] * 16 + ["javascript", "typescript", "go", "rust"]
MAX_TOKENS = [None, None, 128, 256, 384, 512]

SPEC_SECTIONS = [
    "Data model",
    "Public operations",
    "Error handling",
    "Concurrency",
    "Persistence",
    "Performance",
    "Observability",
    "Security",
    "Configuration",
    "Testing strategy",
]
SPEC_SENTENCES = [
    "Every operation validates its arguments and raises a documented exception on bad input.",
    "State changes are recorded in an append-only journal that can be replayed after a crash.",
    "The component exposes counters for calls, failures and latency so dashboards can follow it.",
    "Configuration values are read once at start-up, validated, and never mutated afterwards.",
    "Readers never block writers; a snapshot of the state is published atomically after each change.",
    "Identifiers are opaque strings; callers must not parse them or rely on their ordering.",
    "Timestamps are stored in UTC with millisecond precision and rendered in ISO 8601.",
    "Large inputs are processed in streaming fashion so memory stays bounded by the batch size.",
    "Secrets such as API keys are never logged, never stored in plain text and never returned.",
    "Each public function has a docstring with one worked example that doubles as a doctest.",
]


SPEC_SENTENCES_ZH = [
    "每个操作都会校验参数，遇到错误输入时抛出有文档说明的异常。",
    "状态变化记录在只追加的日志中，崩溃之后可以重放恢复。",
    "组件对外暴露调用次数、失败次数和延迟的计数器，方便仪表盘跟踪。",
    "配置项在启动时只读取一次，经过校验后不再修改。",
    "读操作从不阻塞写操作；每次修改之后原子地发布状态快照。",
    "标识符是不透明的字符串，调用方不得解析它们，也不得依赖其顺序。",
    "时间戳以协调世界时保存，精确到毫秒，并以 ISO 8601 格式输出。",
    "大输入以流式方式处理，内存占用受批大小限制。",
    "密钥等机密信息绝不写入日志，绝不明文存储，也绝不返回给调用方。",
    "每个公开函数都有文档字符串，并附带一个可作为文档测试运行的示例。",
    "缓存命中率低于百分之三十时，系统发出告警并记录最近一百个未命中的键。",
    "重试采用指数退避并加入随机抖动，最多尝试三次，超时后返回明确的错误。",
]
SPEC_CODE = [
    "def retry(fn, attempts=3, backoff=0.25):\n    for i in range(attempts):\n        try:\n"
    "            return fn()\n        except (TimeoutError, ConnectionError):\n"
    "            if i == attempts - 1:\n                raise\n            time.sleep(backoff * 2 ** i)\n",
    "class LRU:\n    def __init__(self, size: int) -> None:\n"
    "        self.size, self.data = size, OrderedDict()\n"
    "    def get(self, key):\n        if key in self.data:\n            self.data.move_to_end(key)\n"
    "            return self.data[key]\n        return None\n",
    "export async function fetchAll(urls, { limit = 4 } = {}) {\n  const out = new Array(urls.length);\n"
    "  let next = 0;\n  const worker = async () => {\n    while (next < urls.length) {\n"
    "      const i = next++;\n      out[i] = await (await fetch(urls[i])).json();\n    }\n  };\n"
    "  await Promise.all(Array.from({ length: limit }, worker));\n  return out;\n}\n",
    "fn parse(line: &str) -> Result<(u64, &str), ParseError> {\n    let (ts, rest) = line\n"
    "        .split_once(' ')\n        .ok_or(ParseError::MissingField(\"timestamp\"))?;\n"
    "    Ok((ts.parse().map_err(|_| ParseError::BadNumber)?, rest.trim()))\n}\n",
    "SELECT user_id, COUNT(*) AS n, MAX(created_at) AS last\n  FROM events\n"
    " WHERE kind IN ('login', 'logout') AND created_at >= NOW() - INTERVAL '7 days'\n"
    " GROUP BY user_id\nHAVING COUNT(*) > 3\n ORDER BY n DESC;\n",
]
SPEC_EMOJI = [
    "✅ build passed 🎉 — deploy 🚀 to staging 🌍 at 10:42 ⏱️",
    "⚠️ cache miss rate 📉 rose; 🔥 hot keys: 🔑 user:42, 🔑 cart:7 👀",
    "👩‍💻 reviewed the PR 👍, 🐛 bug #128 fixed 🛠️, 🧪 tests green 🟢",
    "📦 shipped → 📬 delivered → 📭 returned ❌ refused ♻️ recycled 🔁 retried",
    "🌧️ → ☀️ forecast; 🌡️ 21°C; 💨 12 km/h; 🏃‍♀️ run at 🕖",
    "🔴 p99 latency 1.8 s ⬆️; 🟡 error rate 0.4 % ➡️; 🟢 throughput 320 req/min ⬇️",
    "🧑‍🤝‍🧑 on-call swap: 🅰️ Ana ↔️ 🅱️ Bo; 📅 Mon–Fri; ☎️ escalate after ⏰ 15 min",
]
SPEC_CYRILLIC = [
    "Каждая операция проверяет аргументы и выбрасывает документированное исключение.",
    "Изменения состояния записываются в журнал только для добавления.",
    "Идентификаторы — непрозрачные строки; вызывающая сторона не должна их разбирать.",
]
SCRIPT_SIZES = {
    "english": (14, 24),
    "chinese": (9, 15),
    "code": (8, 12),
    "emoji": (16, 26),
    "mixed": (10, 16),
}


def _section(rng: random.Random, script: str) -> str:
    if script == "english":
        return " ".join(rng.sample(SPEC_SENTENCES, k=len(SPEC_SENTENCES)))
    if script == "chinese":
        return "".join(rng.sample(SPEC_SENTENCES_ZH, k=len(SPEC_SENTENCES_ZH)))
    if script == "code":
        return "Reference code:\n" + "\n".join(rng.sample(SPEC_CODE, k=3))
    if script == "emoji":
        return " ".join(rng.sample(SPEC_EMOJI, k=5))
    parts = [
        rng.choice(SPEC_SENTENCES),
        "".join(rng.sample(SPEC_SENTENCES_ZH, k=3)),
        rng.choice(SPEC_CODE),
        " ".join(rng.sample(SPEC_EMOJI, k=2)),
        rng.choice(SPEC_CYRILLIC),
        f"Limits: {rng.randint(1000, 99999)} requests/day, {rng.randint(10, 999)} ms p95, "
        f"id {rng.getrandbits(40)}.",
    ]
    rng.shuffle(parts)
    return "\n".join(parts)


def make_long_context_scripts(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for script, sizes in SCRIPT_SIZES.items():
        for n, sections in enumerate(sizes):
            requirements = [f"Section {s + 1}: {_section(rng, script)}" for s in range(sections)]
            out.append(
                {
                    "id": f"long-{script}-{n + 1}",
                    "title": f"Implement the component of the {script} specification #{n + 1}",
                    "requirements": requirements,
                    "constraints": ["standard library only"],
                    "language": "python",
                    "max_tokens": 512,
                    "extra": {"script": script},
                }
            )
    return out


def _design(rng: random.Random, index: int) -> dict[str, object]:
    subject = SUBJECTS[index % len(SUBJECTS)]
    variant = index // len(SUBJECTS)
    language = rng.choice(LANGUAGES)
    size = rng.choice(["small", "small", "medium", "medium", "large"])
    count = {"small": rng.randint(1, 3), "medium": rng.randint(4, 7), "large": rng.randint(8, 12)}[size]
    requirements = rng.sample(REQUIREMENTS, k=min(count, len(REQUIREMENTS)))
    if size == "large":
        requirements = [r + LONG_REQUIREMENT_TAIL for r in requirements]
    if variant:
        requirements.append(f"variant {variant}: add a reset() operation that restores the initial state")
    constraints = rng.sample(CONSTRAINTS, k=rng.randint(0, 3))
    if language != "python":
        constraints = [c for c in constraints if c != "Python 3.11"]
    return {
        "id": f"d{index + 1:03d}",
        "title": f"{rng.choice(VERBS)} a {subject}" + (f" (variant {variant})" if variant else ""),
        "requirements": requirements,
        "constraints": constraints,
        "language": language,
        "max_tokens": rng.choice(MAX_TOKENS),
    }


def make_designs(rng: random.Random) -> list[dict[str, object]]:
    unique = [_design(rng, i) for i in range(UNIQUE)]
    lines: list[dict[str, object]] = list(unique)
    for _ in range(DUPLICATES):
        # insert a copy of a random design somewhere after its first occurrence
        original = rng.choice(unique)
        first = lines.index(original)
        lines.insert(rng.randint(first + 1, len(lines)), dict(original))
    return lines


def make_long_context(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, sections in enumerate([15, 17, 20, 23, 26, 29, 31, 33]):
        requirements = []
        for s in range(sections):
            title = SPEC_SECTIONS[s % len(SPEC_SECTIONS)]
            body = " ".join(rng.sample(SPEC_SENTENCES, k=len(SPEC_SENTENCES)))
            requirements.append(f"Section {s + 1} ({title}): {body}")
        out.append(
            {
                "id": f"long{i + 1:02d}",
                "title": f"Implement the component described by pasted specification #{i + 1}",
                "requirements": requirements,
                "constraints": ["standard library only"],
                "language": "python",
                "max_tokens": 512,
            }
        )
    return out


def render(rows: list[dict[str, object]], header: str) -> str:
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    return f"# {header}\n# generated by scripts/make_workloads.py; do not edit by hand\n{body}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    files = {
        OUT / "designs.jsonl": render(
            make_designs(rng),
            f"{UNIQUE + DUPLICATES} design requests: {UNIQUE} unique + {DUPLICATES} exact duplicates",
        ),
        OUT / "long_context.jsonl": render(
            make_long_context(rng), "requests that overflow a 2,048-token window unguarded"
        ),
        OUT / "long_context_scripts.jsonl": render(
            make_long_context_scripts(random.Random(SEED + 1)),
            "long requests in several scripts (English, Chinese, code, emoji, mixed) that overflow "
            "a 2,048-token window unguarded",
        ),
    }
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p, text in files.items():
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
