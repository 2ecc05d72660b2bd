"""The perturbation modes (the grid's ``perturbations`` axis): names and display labels.

The one home of this vocabulary: the config checks against :data:`MODES`, :mod:`xaibench.perturb`
implements them, the leaderboard, the plots and the closing table label them. No torch here, so
that reading a config stays fast.
"""

from __future__ import annotations

#: mode names, in the order of the WHU study (M1, M2, M3)
MODES = ("background_only", "highlighted_only", "highlighted_plus_target")
#: mode -> long label (leaderboard section titles, plot titles)
MODE_LABELS = {
    "background_only": "M1 background only",
    "highlighted_only": "M2 highlighted only",
    "highlighted_plus_target": "M3 highlighted + target",
}
#: mode -> short label (table cells, the closing table)
MODE_SHORT = {mode: label.split()[0] for mode, label in MODE_LABELS.items()}
