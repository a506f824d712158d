"""Find a font that draws Chinese, Japanese and Korean class names in matplotlib plots.

matplotlib's default font (DejaVu Sans) has no CJK glyphs, so a class called "向日葵" comes out as
empty boxes. :func:`configure_cjk_font` finds an installed CJK font and registers it with matplotlib;
:func:`cjk_rc_params` gives the rc settings to apply inside a ``matplotlib.rc_context`` so that only
our own plots use it and the user's global matplotlib settings stay as they were.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

__all__ = ["cjk_rc_params", "configure_cjk_font"]

# Best first: families that cover Simplified Chinese plus Japanese kana and Hangul, then the fonts
# that macOS and Windows ship, so the report also renders on a laptop.
_PREFERRED_FAMILIES: tuple[str, ...] = (
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Source Han Sans",
    "Noto Sans SC",
    "Droid Sans Fallback",
    "PingFang SC",
    "Hiragino Sans GB",
    "Microsoft YaHei",
    "SimHei",
    "Arial Unicode MS",
)
_FONT_DIRS: tuple[str, ...] = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
_CJK_FILE = re.compile(r"wqy|noto.*cjk|sourcehan|source-han|droid", re.IGNORECASE)
_FONT_SUFFIXES = frozenset({".ttc", ".ttf", ".otf"})
# A common Han character: a font "has CJK" when it maps this one.
_PROBE_CHAR = "中"
_INSTALL_HINT = (
    "no CJK font found, so Chinese/Japanese/Korean class names will be drawn as empty boxes in the report "
    "plots; install one, e.g. `apt-get install fonts-wqy-microhei` (Debian/Ubuntu) or fonts-noto-cjk"
)

# None until the first search; then (family or None,). Searched once per process, so the warning is emitted once.
_found: tuple[str | None] | None = None


def configure_cjk_font() -> str | None:
    """Find an installed CJK font and make it available to matplotlib.

    Fonts installed after matplotlib built its font cache are invisible to it, so when none of the
    known families is in the cache the usual font folders are searched for CJK font files, which are
    then registered with ``fontManager.addfont``. Nothing else in matplotlib's global state changes;
    apply :func:`cjk_rc_params` in an ``rc_context`` to use the font.

    Returns:
        The font's family name, or None (after one warning that names the fix) when there is none.
    """
    global _found
    if _found is None:
        family = _find_known_family()
        if family is None:
            _register_font_files()
            family = _find_known_family()
        if family is None:
            warnings.warn(_INSTALL_HINT, RuntimeWarning, stacklevel=2)
        _found = (family,)
    return _found[0]


def cjk_rc_params() -> dict[str, Any]:
    """matplotlib rc settings that draw CJK text, for use in ``matplotlib.rc_context``.

    DejaVu Sans stays first so Latin text looks like every other matplotlib plot; matplotlib (3.6+)
    falls back glyph by glyph to the CJK font for characters DejaVu lacks. The families go straight into
    ``font.family``: matplotlib resolves a generic name such as "sans-serif" to a single font and only
    falls back between fonts named in ``font.family`` itself.

    Returns:
        The settings; empty when no CJK font is installed (the defaults are then the best we have).
    """
    family = configure_cjk_font()
    if family is None:
        return {}
    return {"font.family": ["DejaVu Sans", family]}


def _find_known_family() -> str | None:
    from matplotlib import font_manager

    by_name: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        by_name.setdefault(entry.name, entry.fname)
    for family in _PREFERRED_FAMILIES:
        if family in by_name and _has_cjk_glyph(by_name[family]):
            return family
    return None


def _register_font_files() -> None:
    from matplotlib import font_manager

    for folder in _FONT_DIRS:
        root = Path(folder).expanduser()
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in _FONT_SUFFIXES and _CJK_FILE.search(path.name):
                try:
                    font_manager.fontManager.addfont(str(path))
                except (OSError, RuntimeError, ValueError):
                    # A broken font file must not stop the report; the next candidate may work.
                    continue


def _has_cjk_glyph(path: str) -> bool:
    from matplotlib.ft2font import FT2Font

    try:
        return FT2Font(path).get_char_index(ord(_PROBE_CHAR)) != 0
    except (OSError, RuntimeError, ValueError):
        return False
