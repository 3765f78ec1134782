"""The front end's TypeScript, checked without a browser: the type check (tsc, sources and unit tests) and the unit
tests in js/test/*.test.ts (Node's test runner, bundled by js/test/run.mjs with esbuild).

They need Node.js (>= 20) with npm and js/node_modules (`npm ci` in js/; `pip install -e .` runs it, and so does
.ci/install). Missing tools fail these tests with a message saying so: they are never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[1] / "js"
TIMEOUT = 300


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: the JavaScript tests need Node.js (>= 20) with npm", pytrace=False)
    return path


@pytest.fixture(scope="module")
def node() -> str:
    node = _tool("node")
    _tool("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1)) if re.match(r"v(\d+)", version) else 0
    if major < 20:
        pytest.fail(
            f"Node.js {version or '(unknown version)'} is too old: the JavaScript tests need Node.js >= 20",
            pytrace=False,
        )
    for package in ("typescript", "esbuild", "neuroglancer"):
        if not (JS / "node_modules" / package / "package.json").is_file():
            pytest.fail(
                f"js/node_modules/{package} is missing: run `npm ci` in js/ (`pip install -e .` runs it)", pytrace=False
            )
    return node


def _run(args: list[str], cwd: Path = JS) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    env.pop("FORCE_COLOR", None)
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"`{' '.join(args)}` in {cwd} did not finish within {TIMEOUT} s:\n{e.stdout or ''}\n{e.stderr or ''}",
            pytrace=False,
        )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` in {cwd} failed (exit code {result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result


def _summary(output: str) -> dict[str, int]:
    """The counts node --test prints at the end (`# tests 71`, `# pass 71`, ...)."""
    return {
        name: int(count)
        for name, count in re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", output, flags=re.M)
    }


def test_typecheck_sources(node):
    """`tsc --noEmit -p .` in js/: the widget's TypeScript (js/src) type-checks."""
    _run([_tool("npx"), "--no", "--", "tsc", "--noEmit", "-p", "."])


def test_typecheck_unit_tests(node):
    """`tsc --noEmit -p test` in js/: the unit tests type-check against the modules they test."""
    _run([_tool("npx"), "--no", "--", "tsc", "--noEmit", "-p", "test"])


def test_js_unit_tests(node):
    """`npm test` in js/: every js/test/*.test.ts passes, none skipped."""
    result = _run([_tool("npm"), "test"])
    output = result.stdout + result.stderr
    counts = _summary(output)
    files = sorted(p.name for p in (JS / "test").glob("*.test.ts"))
    assert len(files) >= 4, files
    assert counts.get("tests", 0) >= 50 and counts.get("pass") == counts.get("tests"), output
    assert (counts.get("fail"), counts.get("cancelled"), counts.get("skipped"), counts.get("todo")) == (0, 0, 0, 0), (
        output
    )
    assert f"bundled {len(files)} test files" in output, output  # run.mjs found every file


def test_js_test_runner_reports_failures(node, tmp_path):
    """The runner fails when a test fails (so a broken harness cannot pass by running nothing)."""
    failing = tmp_path / "failing.test.ts"
    failing.write_text(
        'import { test } from "node:test";\n'
        'test("this one fails", () => { const n: number = 1; if (n === 1) throw new Error("on purpose"); });\n'
    )
    result = subprocess.run(
        [node, "test/run.mjs", str(failing)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "on purpose" in output and _summary(output).get("fail") == 1, output
