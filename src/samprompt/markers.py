"""pluggy's markers for samprompt's hooks, in a module that imports nothing of samprompt.

Plugins (the built-in ones included) mark their hook functions with :data:`hookimpl`; the hook
specifications themselves are in :mod:`samprompt.hookspecs`, which re-exports both markers.
"""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

#: The pluggy project name, and the entry-point group plugins register under.
PROJECT = "samprompt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
