"""Teaching while frames come: clicks and extra views change a segmenter's reference, with
undo and reset. One :class:`Teacher` serves the web page (through the server) and ``live``.

The teacher holds the history of references (the first is the original); every change
replaces the segmenter's reference, so the next frame already uses it.
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from dinomask.backbones import Backbone
from dinomask.errors import InvalidReferenceError
from dinomask.features import extract_features
from dinomask.reference import Reference

#: The live commands, one character each (keys in the window, lines on stdin without one).
COMMANDS = {"a": "add this view", "+": "threshold up", "-": "threshold down", "u": "undo",
            "r": "reset to the original reference", "s": "save the taught reference", "q": "quit"}
#: How far one ``+`` or ``-`` moves a fixed threshold.
THRESHOLD_STEP = 0.05
#: Budgets of one taught reference: undo steps kept, views added, clicked feature rows of each kind.
MAX_HISTORY = 16
MAX_VIEWS = 8
MAX_CLICKED_ROWS = 512


class TeachingRefused(InvalidReferenceError):
    """A change the teacher will not make: past one of its budgets, or nothing left to undo."""


class Teacher:
    """The taught reference of one object, its history, and the segmenter that uses it.

    Memory is bounded whatever a user does: at most ``max_history`` undo steps are kept (the
    oldest go first; the original always stays), at most ``max_views`` views are added and at
    most ``max_clicked_rows`` clicked feature rows of each kind; past those a change is refused.

    Args:
        backbone: the backbone that computes a clicked frame's features.
        reference: the original reference.
        on_change: called with each new reference (e.g. ``segmenter.set_reference``).
    """

    def __init__(self, backbone: Backbone, reference: Reference, on_change=None, *, max_history: int = MAX_HISTORY,
                 max_views: int = MAX_VIEWS, max_clicked_rows: int = MAX_CLICKED_ROWS):
        self.backbone = backbone
        self.history: list[Reference] = [reference]
        self.on_change = on_change or (lambda reference: None)
        self.max_history, self.max_views, self.max_clicked_rows = max_history, max_views, max_clicked_rows
        self._lock = threading.Lock()

    @property
    def original(self) -> Reference:
        return self.history[0]

    @property
    def current(self) -> Reference:
        return self.history[-1]

    def _push(self, reference: Reference) -> Reference:
        with self._lock:
            self.history.append(reference)
            while len(self.history) > self.max_history + 1:
                del self.history[1]  # the oldest undo step; the original stays
        self.on_change(reference)
        return reference

    def click(self, frame: np.ndarray, points: Sequence[tuple[float, float]], *, positive: bool) -> Reference:
        """Clicks on ``frame`` (``H x W x 3`` RGB): ``(x, y)`` fractions of its width and height."""
        held = len(self.current.positives if positive else self.current.negatives)
        if held >= self.max_clicked_rows:
            raise TeachingRefused(f"this reference holds {held} clicked {'object' if positive else 'background'} "
                                        f"features, the most it keeps; undo or reset first")
        (features,) = extract_features(self.backbone, [frame], self.current.settings.geometry)
        taught = self.current.add_points(features, points, positive=positive)
        after = len(taught.positives if positive else taught.negatives)
        if after > self.max_clicked_rows:  # one click adds its patch and alike neighbours: check what it adds
            raise TeachingRefused(f"these clicks would hold {after} clicked {'object' if positive else 'background'} "
                                  f"features, over the {self.max_clicked_rows} kept; undo or reset first")
        return self._push(taught)

    def add_view(self, frame: np.ndarray, mask: np.ndarray) -> Reference:
        """``frame`` with its ``mask`` (``H x W`` bool) as another view of the object."""
        views = len(self.current.teaching.views)
        if views >= self.max_views:
            raise TeachingRefused(f"this reference has {views} added views, the most it keeps; undo or reset first")
        return self._push(self.current.add_view(self.backbone, frame, mask))

    def feature_arrays(self) -> list[np.ndarray]:
        """Every feature array the history holds (arrays shared between steps appear once per step)."""
        return [array for reference in self.history for array in reference.feature_arrays]

    def undo(self) -> Reference:
        """Back one step; the original reference stays."""
        with self._lock:
            if len(self.history) == 1:
                raise TeachingRefused("nothing to undo: this is the original reference")
            self.history.pop()
            reference = self.history[-1]
        self.on_change(reference)
        return reference

    def reset(self) -> Reference:
        """Back to the original reference (the history is kept only up to it)."""
        with self._lock:
            del self.history[1:]
            reference = self.history[0]
        self.on_change(reference)
        return reference
