"""The menus the docs and the widget name are napari's real ones (read off a real viewer)."""

import re
from pathlib import Path

from napari_seamless._napari.widget import SAMPLE_MENU

ROOT = Path(__file__).resolve().parents[2]
MENU_PATH = re.compile(r"`((?:File|Plugins|View|Layers|Edit|Window|Help) > [^`]+)`")


def _menu_paths(viewer):
    """Every action of the menu bar as 'Menu > Submenu > Action'."""

    def walk(menu, path):
        for action in menu.actions():
            text = action.text().replace("&", "")
            if action.menu() is not None:
                yield from walk(action.menu(), [*path, text])
            elif text:
                yield " > ".join([*path, text])

    bar = viewer.window._qt_window.menuBar()
    return {
        p
        for a in bar.actions()
        if a.menu() is not None
        for p in walk(a.menu(), [a.text().replace("&", "")])
    }


def test_docs_name_real_menus(make_napari_viewer):
    paths = _menu_paths(make_napari_viewer())
    assert f"File > Open Sample > {SAMPLE_MENU} > Nuclei (512 x 512, fluorescence)" in paths
    assert "Plugins > Exact tiled segmentation (Seamless tiled segmentation)" in paths
    named = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in MENU_PATH.finditer(doc.read_text()):
            named.append((doc.name, match.group(1)))
    assert len(named) >= 3
    wrong = [(doc, p) for doc, p in named if not any(q.startswith(p) for q in paths)]
    assert wrong == []
