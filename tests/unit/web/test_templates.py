"""Templates compose by includes: nothing marks server-built HTML safe, and a missing include fails."""

from __future__ import annotations

import re

import pytest
from jinja2 import TemplateNotFound

from app.main import TEMPLATES_DIR, create_templates

TEMPLATES = sorted(p.relative_to(TEMPLATES_DIR).as_posix() for p in TEMPLATES_DIR.rglob("*.html"))


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_compiles_and_escapes_everything(name: str) -> None:
    source = (TEMPLATES_DIR / name).read_text()
    assert not re.search(r"\|\s*safe\b", source), "render a partial with an include instead of | safe"
    assert "ignore missing" not in source, "a missing partial must fail, not render nothing"
    assert "<style" not in source, "styles belong in static/svcscope.css"
    # The CSP refuses inline styles: an attribute would be dropped by the browser, with a console error.
    assert not re.search(r"\sstyle\s*=", source), "use a class from svcscope.css, not a style attribute"
    create_templates().env.get_template(name)


def test_a_missing_include_fails() -> None:
    env = create_templates().env
    with pytest.raises(TemplateNotFound):
        env.from_string('{% include "partials/_no_such_partial.html" %}').render()


def test_every_bar_width_and_mark_class_a_template_can_produce_is_defined() -> None:
    css = (TEMPLATES_DIR.parent / "static" / "svcscope.css").read_text()
    for i in range(101):
        assert f".w{i}{{width:{i}%}}" in css and f".at{i}{{left:{i}%}}" in css, i
