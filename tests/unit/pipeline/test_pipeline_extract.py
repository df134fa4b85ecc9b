"""Code extraction and validation: fences, language choice, unfenced fallback, no code, syntax errors."""

from __future__ import annotations

from pytest_iterate.pipeline.extract import extract_artifact, extract_code, find_blocks, validate_code


def test_picks_the_block_for_the_requested_language() -> None:
    text = (
        "Plan:\n```bash\npip install x\n```\nCode:\n```py\ndef f():\n    return 1\n```\n"
        "Use:\n```go\nfunc main() {}\n```"
    )
    block = extract_code(text, "python")
    assert block is not None and block.language == "python" and block.code.startswith("def f")
    go = extract_code(text, "golang")
    assert go is not None and go.code == "func main() {}"


def test_untagged_block_preferred_over_other_language() -> None:
    text = "```bash\nls\n```\n```\nx = 1\n```"
    block = extract_code(text, "python")
    assert block is not None and block.code == "x = 1"


def test_largest_block_of_the_language_wins() -> None:
    text = "```python\nx = 1\n```\n```python\ndef f():\n    return 2\n```"
    block = extract_code(text, "python")
    assert block is not None and "def f" in block.code


def test_tilde_fences_and_unclosed_final_fence() -> None:
    assert [b.code for b in find_blocks("~~~python\na = 1\n~~~")] == ["a = 1"]
    cut = "Here:\n```python\ndef f():\n    return 1"  # stopped at max_tokens
    block = extract_code(cut, "python")
    assert block is not None and block.code.endswith("return 1")


def test_unfenced_fallback_takes_code_from_first_code_line() -> None:
    text = "Sure, here it is.\n\nimport math\n\ndef area(r):\n    return math.pi * r * r\n"
    block = extract_code(text, "python")
    assert block is not None and not block.fenced
    assert block.code.startswith("import math") and "return math.pi" in block.code


def test_no_code_gives_a_warning_not_an_error() -> None:
    artifact = extract_artifact("I cannot help with that request.", "python")
    assert artifact.code is None and artifact.valid is None
    assert [w.action for w in artifact.warnings] == ["no_code"]


def test_invalid_python_reports_the_syntax_error_line() -> None:
    text = "```python\nimport os\n\ndef f(:\n    pass\n```"
    artifact = extract_artifact(text, "python")
    assert artifact.valid is False and artifact.syntax_error_line == 3
    assert artifact.syntax_error


def test_valid_python_and_unchecked_languages() -> None:
    assert validate_code("x = 1\n", "python") == (True, None, None)
    assert validate_code("fn main() {", "rust") == (None, None, None)
    artifact = extract_artifact("```rust\nfn main() {}\n```", "rust")
    assert artifact.language == "rust" and artifact.valid is None and artifact.code == "fn main() {}"
