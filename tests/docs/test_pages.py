"""Every page's configs load with the real loaders, and every shell or Python block is run by
a test of its page or marked as an illustration (support/doc_blocks.py says how)."""

from __future__ import annotations

import pytest

from support.doc_blocks import PAGES, ROOT, all_blocks, blocks, validate_json, validate_yaml

CONFIGS = [b for b in all_blocks() if b.lang in ("yaml", "json")]


@pytest.mark.parametrize("block", CONFIGS, ids=str)
def test_each_config_block_is_accepted_by_its_loader(block):
    if block.lang == "yaml":
        validate_yaml(block)
    else:
        validate_json(block)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_runnable_block_has_a_test_or_an_illustration_marker(page):
    unmarked = [b for b in blocks(page) if b.kind and not b.illustration]
    module = ROOT / "tests" / "docs" / f"test_{page.stem.lower().replace('-', '_')}.py"
    assert not unmarked or module.exists(), (
        f"{page.name}: {', '.join(map(str, unmarked))} run nowhere: add {module.name} to run "
        "them, or mark each as <!-- illustration: the site it is for -->")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_block_says_its_language(page):
    """A fence without a language could hide a shell block from the checks above."""
    untagged = [str(b) for b in blocks(page) if not b.lang]
    assert not untagged, f"give these blocks a language (text for diagrams): {untagged}"
