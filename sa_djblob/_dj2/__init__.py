"""DataJoint 2.x's layout: JSON pointers, ``_hash/<schema>/<base32 md5>`` objects, and the
claims that make its sweep safe while sa_djblob writers run. The public face is
:mod:`sa_djblob.dj2`; see docs/dj2.md."""
