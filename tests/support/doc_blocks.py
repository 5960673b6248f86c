"""The code blocks of README.md and docs/*.md, as tests/docs runs or validates them.

Blocks are found with markdown-it-py (a CommonMark parser), so a block is what a Markdown
viewer shows as one. A shell or Python block either runs in tests/docs as written, or is marked
in the page, right before its fence, as an illustration for a site this machine cannot be:

    <!-- illustration: a PBSPro cluster -->

Configs (YAML, JSON schemas) are loaded by the real loaders whether marked or not.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Fence languages that are commands or programs, not data.
RUNNABLE = {"python": "python", "py": "python", "bash": "shell", "sh": "shell",
            "shell": "shell", "console": "console"}
_MARKER = re.compile(r"<!--\s*illustration:\s*(.+?)\s*-->", re.S)


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, first line (1-based, the fence's), language and text."""

    page: Path
    line: int
    lang: str
    source: str
    illustration: str | None

    @property
    def kind(self) -> str | None:
        """python, shell or console for runnable blocks, else None."""
        return RUNNABLE.get(self.lang)

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang or 'no language'})"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page`, each with the illustration marker right before it."""
    found, marker = [], None
    for token in MarkdownIt("commonmark").parse(page.read_text()):
        if token.type == "html_block":
            m = _MARKER.search(token.content)
            marker = m.group(1) if m else None
            continue
        if token.type == "fence" and token.map:
            lang = token.info.split()[0].lower() if token.info.strip() else ""
            found.append(Block(page, token.map[0] + 1, lang, token.content, marker))
        if token.type != "inline" and token.nesting >= 0:
            marker = None
    return found


def page(name: str) -> Path:
    return ROOT / name


def runnable(name: str) -> list[Block]:
    """The page's shell and Python blocks that are not marked as illustrations."""
    return [b for b in blocks(page(name)) if b.kind and not b.illustration]


# --- console blocks: `$ command` / `# command` lines, the rest is their output -------------------
@dataclass
class Command:
    line: str
    expected: list[str]


def console_commands(block: Block) -> list[Command]:
    """The prompted commands of a console block, each with the output lines shown under it."""
    commands: list[Command] = []
    for text in block.source.splitlines():
        if text.startswith(("$ ", "# ")):
            commands.append(Command(text[2:], []))
        elif commands:
            commands[-1].expected.append(text)
    return commands


def output_matches(expected: list[str], actual: str) -> bool:
    """The shown output, line by line; `...` in a shown line stands for any text (ids, pids,
    times). A block that shows no output checks none."""
    if not expected:
        return True
    pattern = "\n".join(".*".join(map(re.escape, line.split("..."))) for line in expected)
    return re.fullmatch(pattern, actual.rstrip("\n")) is not None


def run_console(block: Block, env: Mapping[str, str], cwd: Path,
                replace: Mapping[str, str] = {}) -> list[str]:
    """Run each command of a console block in bash; the problems found (empty: as shown).

    `replace` swaps a page's example hosts (https://broker.example.org) for the test stack's.
    """
    assert block.kind == "console", f"{block}: not a console block"
    problems = []
    for cmd in console_commands(block):
        line = cmd.line
        for old, new in replace.items():
            line = line.replace(old, new)
        out = subprocess.run(["bash", "-c", line], env=dict(env), cwd=cwd, text=True,
                             capture_output=True, timeout=60)
        if out.returncode != 0:
            problems.append(f"{block}: `{cmd.line}` exited {out.returncode}: {out.stderr}")
        elif not output_matches(cmd.expected, out.stdout):
            problems.append(f"{block}: `{cmd.line}` printed {out.stdout!r}, the page shows "
                            f"{cmd.expected!r}")
    return problems


# --- configs ----------------------------------------------------------------------------------
#: broker_url for pages that show only an endpoint's `engine` section.
PLACEHOLDER_URL = "https://fnrelay.example.org"


def validate_yaml(block: Block) -> None:
    """Load a YAML block with the loader of what it configures; raises its error if refused."""
    from fnrelay_endpoint.config.model import EndpointConfig, ManagerConfig
    from fnrelay_endpoint.multiuser.identity import IdentityMapping

    data = yaml.safe_load(block.source)
    if not isinstance(data, dict):
        raise AssertionError(f"{block}: not a mapping")
    if data.get("multi_user") is True:
        ManagerConfig.from_dict(data, str(block))
    elif data.keys() & {"map", "rules", "denied_accounts"}:
        IdentityMapping.from_dict(data, str(block))
    elif data.keys() & {"engine", "broker_url"}:
        EndpointConfig.from_dict({"broker_url": PLACEHOLDER_URL, **data}, str(block))
    elif "scrape_configs" in data:
        for job in data["scrape_configs"]:
            scrape_request(job)
    else:
        raise AssertionError(f"{block}: a YAML block of no known kind (keys {sorted(data)})")


def scrape_request(job: Mapping[str, Any]) -> tuple[str, str]:
    """(path, token file) of a Prometheus scrape job for the broker, read with Prometheus'
    documented keys and defaults (no Prometheus here: test_metrics.py scrapes as it says)."""
    assert job["job_name"] and job["static_configs"][0]["targets"], job
    assert job.get("scheme", "http") in ("http", "https"), job
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and auth["credentials_file"], job
    return job.get("metrics_path", "/metrics"), auth["credentials_file"]


def validate_json(block: Block) -> Any:
    """Parse a JSON block; a JSON Schema is also checked to be one, and a Harvester queue
    config's fnrelay plugins are made from it as Harvester makes them."""
    from fnrelay_endpoint.multiuser.usertemplate import load_schema_text

    data = json.loads(block.source)
    if isinstance(data, dict) and "$schema" in data:
        load_schema_text(block.source, str(block))
    elif isinstance(data, list) and all(isinstance(d, dict) and "DATA_TYPE" in d
                                        for d in data):
        from fnrelay_endpoint.multiuser.identity import IdentityMapping

        IdentityMapping.from_gc_documents(data, str(block))
    elif isinstance(data, dict) and all(isinstance(q, dict) and "submitter" in q
                                        for q in data.values()):
        for queue in data.values():
            _harvester_plugins(queue)
    return data


def _harvester_plugins(queue: Mapping[str, Any]) -> None:
    """Each fnrelay plugin of a queue config, from its `module` and `name`, with its section as
    keyword arguments (Harvester's PluginBase); the submitter's command template is checked."""
    import importlib

    from fnrelay.harvester.mapping import check_template

    for section in queue.values():
        if isinstance(section, dict) and str(section.get("module", "")).startswith("fnrelay."):
            kind = getattr(importlib.import_module(section["module"]), section["name"])
            plugin = kind(**{k: v for k, v in section.items() if k not in ("module", "name")})
            if hasattr(plugin, "executable"):
                check_template(plugin.executable)


def all_blocks() -> Iterator[Block]:
    for p in PAGES:
        yield from blocks(p)
