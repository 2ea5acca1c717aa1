"""Offsite copies: every verified backup also goes to S3-compatible object storage.

- :mod:`.codec`: the object's bytes, streamed: zstd, then age (when recipients are set).
- :mod:`.store`: the object-store seam (a small Protocol) and its S3 implementation.
- :mod:`.copies`: upload with proof, listing, download, restore drills, remote retention.

The library takes plain values (a :class:`.store.Remote`, recipient strings, paths); the
command layer (:mod:`sidecar.commands.offsite`) builds them from the settings.
"""
