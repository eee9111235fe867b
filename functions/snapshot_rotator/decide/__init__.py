"""The decisions of snapshot_rotator, pure functions of plain data (no AWS, no clock):

- :mod:`snapshot_rotator.decide.selection` - which volumes to snapshot in this run (opt-in,
  opt-out, the retry window, the tags of the new snapshots);
- :mod:`snapshot_rotator.decide.retention` - which snapshots to keep and which to delete
  (newest N, minimum age, daily / weekly / monthly tiers; safety rule 1).
"""
