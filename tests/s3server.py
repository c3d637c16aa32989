"""moto's S3 server on loopback with IAM enforced (or ``--open``), run as its own process by :mod:`tests.s3`.

Prints one JSON line (port, access key, secret) when it serves, and stops when
its standard input closes (the test process ended). The user it makes may do
anything in S3 but list the bucket ``locked``. ``--bulk BUCKET/PREFIX:N``
puts N small objects there through moto's own models before serving (10,000
PUTs over HTTP would take a minute; every read of them goes through the API).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if "--open" not in sys.argv:  # before moto reads its settings: every request is checked
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"

from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam import access_control
from moto.iam.models import iam_backends
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:*", "iam:*"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::locked"},
    ],
}


def main() -> None:
    # moto 5.2 recomputes the signature of a request whose query holds an encoded "/" (ListObjectsV2 with
    # Prefix=clips/) differently from botocore and refuses it; the key and its policies are still checked.
    access_control.S3IAMRequest.check_signature = lambda self: None  # type: ignore[method-assign]
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bulk", action="append", default=[], help="BUCKET/PREFIX:N small .wav objects")
    ap.add_argument("--open", action="store_true", help="no IAM: any key is taken, presigned addresses work")
    args = ap.parse_args()
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
    iam.create_user("us-east-1", "batchser")
    key = iam.create_access_key("batchser")
    iam.put_user_policy("batchser", "all-but-listing-locked", json.dumps(POLICY))
    s3 = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for spec in args.bulk:
        where, n = spec.rsplit(":", 1)
        bucket, _, prefix = where.partition("/")
        if bucket not in s3.buckets:
            s3.create_bucket(bucket, "us-east-1")
        for i in range(int(n)):
            s3.put_object(bucket, f"{prefix}{i:05d}.wav", b"RIFF" + i.to_bytes(4, "little"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    print(json.dumps({"port": args.port, "key": key.access_key_id, "secret": key.secret_access_key}), flush=True)
    sys.stdin.read()  # until the test process closes it (or dies)
    server.stop()


if __name__ == "__main__":
    main()
