"""DataJoint 0.14.10's object paths, as DataJoint itself built them, for each rule of
``_layout.object_path`` (file and S3 stores).

The folders were produced by DataJoint 0.14.10 (``ExternalTable._make_uuid_path`` with
``database='main'``, on Python 3.11). ``test_layout_dj_paths`` checks ``object_path``
against them; ``test_datajoint_interop`` runs the same cases against the live DataJoint.
"""

from __future__ import annotations

# (protocol, location) -> the folder part DataJoint puts before ``main/01/23/<hex>``
DATAJOINT = {
    ("s3", ""): "",
    ("s3", "/dj"): "dj/",
    ("s3", "dj"): "dj/",
    ("s3", "dj/"): "dj/",
    ("s3", "/dj/sub/"): "dj/sub/",
    ("s3", "f:\\data\\dj"): "data/dj/",
    ("s3", "f:/data/dj"): "data/dj/",
    ("s3", "\\data\\dj"): "data/dj/",
    ("s3", "f:data"): "data/",
    ("s3", "//server/share/dj"): "dj/",
    ("s3", "ab:c/d"): "d/",
    ("s3", "a\\b"): "a/b/",
    ("s3", "./x"): "x/",
    ("file", ""): "",
    ("file", "/dj"): "/dj/",
    ("file", "dj"): "dj/",
    ("file", "dj/"): "dj/",
    ("file", "/dj/sub/"): "/dj/sub/",
    ("file", "f:\\data\\dj"): "f:\\data\\dj/",
    ("file", "f:/data/dj"): "f:/data/dj/",
    ("file", "\\data\\dj"): "\\data\\dj/",
    ("file", "f:data"): "f:data/",
    ("file", "//server/share/dj"): "//server/share/dj/",
    ("file", "ab:c/d"): "ab:c/d/",
    ("file", "a\\b"): "a\\b/",
    ("file", "."): "",
    ("file", "./x"): "x/",
}
