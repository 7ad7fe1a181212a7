#!/usr/bin/env python3
"""A local S3-compatible server for blockflow's object-storage tests.

Runs moto's S3 server (from the virtualenv `scripts/setup` makes, .venv-s3)
on 127.0.0.1 with request signing enforced, creates one IAM user allowed
everything and a bucket, and prints one line of JSON on stdout once it
serves:

    {"endpoint": "http://127.0.0.1:PORT", "key": "...", "secret": "...", "bucket": "..."}

then serves until it is killed or its standard input closes (so a test
that dies takes its server with it). Public objects (`--public PREFIX`)
are also readable unsigned over plain HTTP, with Range requests, for the
http(s) reader's test.

Usage: .venv-s3/bin/python scripts/s3_server.py [--port N] [--bucket NAME]
"""

import argparse
import json
import os
import socket
import sys
import threading

# Signatures are checked from the 4th request on: the first three (create
# the user, its policy, its key) are the only unsigned ones.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bucket", default="blockflow")
    args = ap.parse_args()
    port = args.port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    anon = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam = boto3.client("iam", **anon)
    iam.create_user(UserName="blockflow")
    iam.put_user_policy(
        UserName="blockflow",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="blockflow")["AccessKey"]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    s3.create_bucket(Bucket=args.bucket)
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "key": key["AccessKeyId"],
                "secret": key["SecretAccessKey"],
                "bucket": args.bucket,
                "region": "us-east-1",
            }
        ),
        flush=True,
    )
    # Serve until stdin closes (the test that started us ended) or a signal.
    stop = threading.Event()

    def watch():
        try:
            while sys.stdin.read(1):
                pass
        finally:
            stop.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
