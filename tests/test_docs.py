"""The docs never drift from the code, and the Chinese edition never drifts from the English.

* every ``literalinclude`` names a file that exists, a ``:pyobject:`` that the
  file defines and start/end markers that the file (or that object) contains;
* every catalog in ``docs/locale/zh_CN`` is complete: no empty and no fuzzy
  entry, and every message the English pages produce has its translation;
* the Chinese text uses the glossary's term for each English term;
* measured figures (the runs table, the benchmark's generated table) stay out of
  the catalogs, so that new figures need no new translation;
* both editions build with ``-W`` (warnings are errors);
* ``docs/make_figures.py`` draws its figures from a saved parameter file and curve.

Needs the ``docs`` extra (sphinx, sphinx-intl, numpydoc, matplotlib).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LOCALE = DOCS / "locale" / "zh_CN" / "LC_MESSAGES"
PAGES = sorted(p.stem for p in DOCS.glob("*.rst"))

sphinx = pytest.importorskip("sphinx", reason="install the docs extra: pip install -e '.[docs]'")
from babel.messages.pofile import read_po  # noqa: E402  (sphinx depends on babel)
from sphinx.pycode import ModuleAnalyzer  # noqa: E402

DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. literalinclude::\s*(?P<path>\S+)\s*$")
OPTION = re.compile(r"^[ \t]+:(?P<name>[\w-]+):\s*(?P<value>.*?)\s*$")


def literalincludes():
    """Yield ``(page, line number, target path, {option: value})`` for every literalinclude."""
    for page in sorted(DOCS.glob("*.rst")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = DIRECTIVE.match(line)
            if not match:
                continue
            options = {}
            for following in lines[i + 1 :]:
                option = OPTION.match(following)
                if not option:
                    break
                options[option["name"]] = option["value"]
            yield page.name, i + 1, (page.parent / match["path"]).resolve(), options


INCLUDES = list(literalincludes())


def test_pages_include_code():
    assert len(INCLUDES) >= 10
    assert {opts.get("pyobject") for _, _, _, opts in INCLUDES} >= {
        "LogisticRegression",
        "load_data",
        "sgd_optimization_mnist",
        "HiddenLayer",
        "MLP",
        "LeNetConvPoolLayer",
        "evaluate_lenet5",
        "experiment",
        "_loop",  # the body of training.patience_loop
    }


@pytest.mark.parametrize(
    "page, lineno, target, options", INCLUDES, ids=[f"{p}:{n}" for p, n, _, _ in INCLUDES]
)
def test_literalinclude_target_exists(page, lineno, target, options):
    assert target.is_file(), f"{page}:{lineno}: no file {target}"
    text = target.read_text(encoding="utf-8")
    where = f"{page}:{lineno}: {target.name}"
    if "pyobject" in options:
        tags = ModuleAnalyzer.for_file(str(target), "").find_tags()
        name = options["pyobject"]
        assert name in tags, f"{where} defines no {name!r}"
        _, start, end = tags[name]
        text = "\n".join(text.splitlines()[start - 1 : end - 1])
        where += f" ({name})"
    for key in ("start-after", "end-before", "start-at", "end-at"):
        if key in options:
            assert options[key] in text, f"{where} has no marker {options[key]!r}"
    if "start-after" in options and "end-before" in options:
        start = text.index(options["start-after"])
        assert options["end-before"] in text[start:], f"{where}: end marker before the start"


# --------------------------------------------------------------------------- catalogs


def catalog(page):
    path = LOCALE / f"{page}.po"
    assert path.is_file(), f"no catalog {path.relative_to(REPO)}: run sphinx-intl update"
    with open(path, "rb") as f:
        return read_po(f, locale="zh_CN")


def messages(cat):
    return [m for m in cat if m.id]


@pytest.mark.parametrize("page", PAGES)
def test_catalog_complete(page):
    cat = catalog(page)
    assert messages(cat), f"{page}.po is empty"
    untranslated = [m.id for m in messages(cat) if not m.string]
    fuzzy = [m.id for m in messages(cat) if m.fuzzy]
    assert not untranslated, f"{page}.po: untranslated {untranslated[:3]}"
    assert not fuzzy, f"{page}.po: fuzzy {fuzzy[:3]}"


@pytest.fixture(scope="module")
def pot_dir(tmp_path_factory):
    """The messages the English pages produce now (the gettext builder's .pot files)."""
    out = tmp_path_factory.mktemp("gettext")
    build(["-b", "gettext", str(DOCS), str(out)])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_catalog_current(pot_dir, page):
    """Every message of the English page is translated: edit the prose, edit the .po."""
    with open(pot_dir / f"{page}.pot", "rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    translated = {m.id for m in messages(catalog(page)) if m.string and not m.fuzzy}
    missing = sorted(wanted - translated)
    assert not missing, (
        f"{page}: {len(missing)} messages without translation, first {missing[0]!r}; run "
        "sphinx-build -b gettext docs docs/_build/gettext && "
        "sphinx-intl update -p docs/_build/gettext -l zh_CN -d docs/locale"
    )


def test_measured_figures_stay_out_of_catalogs(pot_dir):
    """conf.py keeps the figures out of translation; the headings stay translated."""
    results = (DOCS / "results.rst").read_text(encoding="utf-8")
    assert ".. include:: benchmarks/cpu.rst" in results
    assert (DOCS / "benchmarks" / "cpu.rst").is_file()
    with open(pot_dir / "results.pot", "rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    assert "…" not in wanted, "a cell of the runs table went into the catalog"
    assert not any(m.startswith("Written by") for m in wanted), "the benchmark's table did"
    assert {"lesson", "machine", "epochs"} <= wanted


def glossary_pairs():
    """(English, Chinese) pairs from the glossary's table."""
    text = (DOCS / "glossary.rst").read_text(encoding="utf-8")
    cells = re.findall(r"^   \* - (.+)\n     - (.+)$", text, flags=re.M)
    pairs = [(en.split("(")[0].strip(), zh.strip()) for en, zh in cells]
    return [(en, zh) for en, zh in pairs if en != "English"]


def test_glossary_has_the_required_pairs():
    assert set(glossary_pairs()) >= {
        ("feature map", "特征图"),
        ("max-pooling", "最大池化"),
        ("minibatch", "小批量"),
        ("early stopping", "提前停止"),
        ("negative log-likelihood", "负对数似然"),
        ("learning rate", "学习率"),
        ("shared variable", "共享变量"),
        ("symbolic", "符号"),
        ("convolution", "卷积"),
        ("patience", "耐心值"),
    }


def _prose(text):
    """``text`` without literals, roles and hyperlinks, hyphens as spaces, lower case."""
    text = re.sub(r"``.*?``", " ", text, flags=re.S)
    text = re.sub(r":\w+:`.*?`", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`_*", " ", text, flags=re.S)
    return text.replace("-", " ").lower()


@pytest.mark.parametrize("page", [p for p in PAGES if p != "glossary"])
def test_glossary_terms_used(page):
    """Where the English says a glossary term, the Chinese says the glossary's translation."""
    problems = []
    for en, zh in glossary_pairs():
        term = re.compile(r"\b" + re.escape(en.replace("-", " ").lower()) + r"(e?s)?\b")
        for m in messages(catalog(page)):
            if m.string and m.string != m.id and term.search(_prose(m.id)) and zh not in m.string:
                problems.append(f"{en} / {zh}: {m.id[:60]!r}")
    assert not problems, f"{page}.po: " + "; ".join(problems[:5])


# --------------------------------------------------------------------------- builds


def build(args):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_build_without_warnings(tmp_path, language):
    args = ["-W", "--keep-going", "-b", "html", "-d", str(tmp_path / "doctrees")]
    if language != "en":
        args += ["-D", f"language={language}"]
    build([*args, str(DOCS), str(tmp_path / language)])
    page = (tmp_path / language / "lenet.html").read_text(encoding="utf-8")
    assert "431,080" in page and "LeNetConvPoolLayer" in page
    if language == "zh_CN":
        assert "特征图" in page and "最大池化" in page


# --------------------------------------------------------------------------- figures


@pytest.mark.slow
def test_make_figures(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.RandomState(0)
    shapes = {
        "layer0_W": (20, 1, 5, 5),
        "layer0_b": (20,),
        "layer1_W": (50, 20, 5, 5),
        "layer1_b": (50,),
        "layer2_W": (800, 500),
        "layer2_b": (500,),
        "layer3_W": (500, 10),
        "layer3_b": (10,),
    }
    np.savez(tmp_path / "best.npz", **{k: rng.uniform(-0.1, 0.1, s) for k, s in shapes.items()})
    curve = {"validation_curve": [[100, 0.05], [200, 0.03], [300, 0.025]]}
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    subprocess.run(
        [
            sys.executable,
            str(DOCS / "make_figures.py"),
            "--params",
            str(tmp_path / "best.npz"),
            "--curve",
            str(tmp_path / "curve.json"),
            "--dataset",
            str(tmp_path / "no-such-mnist.pkl.gz"),
            "--out",
            str(tmp_path / "figures"),
        ],
        check=True,
        capture_output=True,
    )
    for name in ("lenet_filters.png", "lenet_curve.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_figures_exist():
    for name in ("lenet_filters.png", "lenet_predictions.png", "lenet_curve.png"):
        assert (DOCS / "figures" / name).is_file(), f"docs/figures/{name}: run docs/make_figures.py"
