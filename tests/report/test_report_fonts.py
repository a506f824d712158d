"""Class names in any script must be drawn in the plots, not as empty boxes."""

from __future__ import annotations

import io
import warnings

import matplotlib
import pytest
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.ft2font import FT2Font

from imgcls import _fonts


@pytest.fixture
def cjk_family() -> str:
    family = _fonts.configure_cjk_font()
    if family is None:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei)")
    return family


def test_found_font_is_a_cjk_font(cjk_family: str) -> None:
    path = findfont(FontProperties(family=cjk_family), fallback_to_default=False)
    font = FT2Font(path)
    assert all(font.get_char_index(ord(ch)) != 0 for ch in "向日葵")


def test_chinese_tick_labels_draw_without_missing_glyphs(cjk_family: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with matplotlib.rc_context(_fonts.cjk_rc_params()):
            fig = Figure(figsize=(3, 2))
            ax = fig.add_subplot()
            ax.set_xticks([0, 1], ["向日葵", "bird (small)"])
            ax.set_title("向日葵 (AP 0.52)")
            fig.savefig(io.BytesIO(), format="png")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == []


def test_without_cjk_defaults_warn_about_missing_glyphs() -> None:
    """The check above is meaningful: matplotlib's default font does warn about Chinese."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
            fig = Figure(figsize=(3, 2))
            fig.add_subplot().set_title("向日葵")
            fig.savefig(io.BytesIO(), format="png")
    assert any("missing from font" in str(w.message) for w in caught)


def test_global_rc_params_are_left_alone(cjk_family: str) -> None:
    before = dict(matplotlib.rcParams)
    _fonts.configure_cjk_font()
    _fonts.cjk_rc_params()
    assert dict(matplotlib.rcParams) == before


def test_no_cjk_font_warns_once_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fonts, "_found", None)
    monkeypatch.setattr(_fonts, "_find_known_family", lambda: None)
    monkeypatch.setattr(_fonts, "_register_font_files", lambda: None)
    with pytest.warns(RuntimeWarning, match="fonts-wqy-microhei"):
        assert _fonts.configure_cjk_font() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _fonts.configure_cjk_font() is None  # searched once: no second warning
        assert _fonts.cjk_rc_params() == {}
