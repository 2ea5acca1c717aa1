"""The Docker seam: find the app's container(s), stop, start and restart them, wait until healthy.

``apps`` (the seam types and Protocol), ``engine`` (connect), ``control`` (AppControl, the
docker-SDK implementation), ``identity`` (our own container), ``retry`` and ``describe``
(helpers). See docs/design.md, 'The Docker seam'.
"""
