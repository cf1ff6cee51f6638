"""The web page of `uniretrieve serve` ships inside the package and stays self-contained and safe: every asset it
names is package data, nothing is fetched from another origin, and no data string is ever parsed as HTML."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

PAGE_FILES = ("index.html", "app.js", "style.css")


def static_text(name: str) -> str:
    return files("uniretrieve").joinpath("serve", "static", name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", PAGE_FILES)
def test_page_files_are_package_resources(name: str) -> None:
    # importlib.resources reads them from wherever the package is installed (wheel, editable, zip); the wheel test
    # (tests/test_packaging.py) checks that every file under uniretrieve/ is in the wheel.
    assert len(static_text(name)) > 500


def test_every_asset_the_page_names_is_shipped_and_local() -> None:
    html = static_text("index.html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    static = [a for a in assets if a.startswith("/static/")]
    assert sorted(static) == ["/static/app.js", "/static/style.css"]
    for asset in assets:
        assert asset.startswith(("/static/", "/", "data:")), f"index.html loads {asset} from elsewhere"
    for name in PAGE_FILES:
        text = static_text(name)
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), (
            f"{name} names another origin"
        )
        assert "@import" not in text


def test_script_never_parses_data_as_html() -> None:
    js = static_text("app.js")
    code = "\n".join(line for line in js.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, f"app.js uses {sink}"


def test_every_element_the_script_looks_up_exists_once() -> None:
    js = static_text("app.js")
    html = static_text("index.html")
    wanted = set(re.findall(r'\$\("([\w-]+)"\)', js))
    assert len(wanted) > 20
    for element_id in wanted:
        assert len(re.findall(rf'\bid="{element_id}"', html)) == 1, f"#{element_id} missing or repeated"


def test_every_form_field_has_a_label() -> None:
    html = static_text("index.html")
    labelled = set(re.findall(r'<label[^>]*\bfor="([\w-]+)"', html))
    fields = re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
    assert fields
    for field in fields:
        element_id = re.search(r'\bid="([\w-]+)"', field)
        assert element_id and element_id.group(1) in labelled, f"no <label for> for {field}"
