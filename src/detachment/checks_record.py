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
        not checked).
    self_consistency_paths : sequence of str or os.PathLike, default ()
        Its ``self_consistency.csv``, or nothing where the check was skipped: ``consistent`` false gives
        :data:`SELF_CONSISTENCY`.

    Returns
    -------
    list of str
        Empty where every check that ran passed.
    """
    qc = pd.read_csv(qc_path)
    out = [str(c) for c in qc.loc[~qc.passed.astype(bool), "check"]]
    level = pd.read_csv(contact_level_path)
    if "ambiguous" in level.columns and bool(level.ambiguous.iloc[0]):
        out.append(CONTACTS)
    for path in self_consistency_paths:
        if not bool(pd.read_csv(path).consistent.iloc[0]):
            out.append(SELF_CONSISTENCY)
    return out
