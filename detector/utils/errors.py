"""The one base class of the errors a user can fix.

Every input or state problem (a config key, a dataset record, a checkpoint, a run directory,
a study file) raises a subclass of :class:`SmalldetError` whose message names the file, the
field and the fix. The ``smalldet`` commands print such a message on one line and exit
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SmalldetError(Exception):
    """A problem with the user's input or files, explained in the message."""
