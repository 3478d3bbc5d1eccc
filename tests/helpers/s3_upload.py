"""Upload one file to an S3 store (through a proxy); run by test_s3_faults in a subprocess.

python s3_upload.py ENDPOINT BUCKET SIZE [--old]

Keys come from SA_DJBLOB_TEST_S3_ACCESS_KEY / _SECRET_KEY. ``--old`` leaves botocore's
``Expect: 100-continue`` in place (the behaviour before the fix). Prints ``OK`` or
``StoreError: ...``; any other exception propagates.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path, PurePosixPath

from sa_djblob._exceptions import StoreError
from sa_djblob.stores import S3Store
from sa_djblob.stores import s3 as s3_module


def main() -> None:
    endpoint, bucket, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if "--old" in sys.argv[4:]:
        s3_module._avoid_expect_continue = lambda client: None
    store = S3Store(
        "faulty",
        bucket=bucket,
        location="store",
        endpoint=endpoint,
        access_key=os.environ["SA_DJBLOB_TEST_S3_ACCESS_KEY"],
        secret_key=os.environ["SA_DJBLOB_TEST_S3_SECRET_KEY"],
    )
    store.connect_timeout = 2.0
    store.read_timeout = 5.0
    store.max_attempts = 2
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "payload.bin")
        src.write_bytes(os.urandom(size))
        try:
            store.upload_file(PurePosixPath("/store/x/payload.bin"), src)
        except StoreError as exc:
            print(f"StoreError: {exc}", flush=True)
            return
    print("OK", flush=True)


if __name__ == "__main__":
    main()
