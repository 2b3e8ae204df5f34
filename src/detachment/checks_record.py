"""Which of a sample's checks failed, read back from the files they wrote.

A run told to go on past a failed check (``threshold.on_implausible``, ``science.on_ambiguous_contacts``,
``science.self_consistency``: ``warn``) writes its tables as if all were well; these readers let the
statistics say which cells went on so (:func:`detachment.stats.with_failed_checks`).
"""

from __future__ import annotations

import pandas as pd

#: Names for the contact reading's checks and the self-consistency check in :func:`failed_checks`.
CONTACTS, SELF_CONSISTENCY = "contacts", "self_consistency"


def failed_checks(qc_path, contact_level_path, self_consistency_paths=()) -> list[str]:
    """The checks a sample failed: its phase map's by name, then :data:`CONTACTS` and :data:`SELF_CONSISTENCY`.

    Parameters
    ----------
    qc_path : str or os.PathLike
        The sample's ``phase_qc.csv`` (:func:`detachment.plausibility.check_phase_map`): each row whose
        ``passed`` is false gives its ``check``.
    contact_level_path : str or os.PathLike
        Its ``contact_level.csv``: ``ambiguous`` true gives :data:`CONTACTS` (a file without the column:
        not checked); read as the validation reads it (:func:`detachment.robustness.contact_reading_plausible`).
    self_consistency_paths : sequence of str or os.PathLike, default ()
        Its ``self_consistency.csv`` (one), or nothing where the check was skipped: ``consistent`` false gives
        :data:`SELF_CONSISTENCY`.

    Returns
    -------
    list of str
        Empty where every check that ran passed.
    """
    from .robustness import contact_reading_plausible, self_consistency_metrics

    qc = pd.read_csv(qc_path)
    out = [str(c) for c in qc.loc[~qc.passed.astype(bool), "check"]]
    if contact_reading_plausible(contact_level_path) == 0.0:  # NaN: written before the check existed
        out.append(CONTACTS)
    if self_consistency_metrics(list(self_consistency_paths))["contact_reading_self_consistent"] == 0.0:
        out.append(SELF_CONSISTENCY)
    return out
