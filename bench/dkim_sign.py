#!/usr/bin/env python3
"""Microseconds per DKIM signature (rsa-sha256, relaxed/relaxed), dkimpy's path against relay's own.

For a 5 KB and a 100 KB message (a plain-text newsletter, CRLF, the headers relay signs), in this one
process (one thread, so one core), it times each step ``--count`` times and prints the median in
microseconds of CPU time:

- dkimpy (``dkim.sign`` with relay's arguments, OpenSSL doing the RSA as relay/dkim.py arranges: what
  ``Signer.sign`` did before relay had its own signer, and what it falls back to): the whole call, then
  its steps: parse the PEM key (dkimpy's pure-Python ASN.1, on every call), parse the message into
  header fields and body, canonicalise and hash the headers, canonicalise and hash the body, RSA.
- relay (relay/dkim_sign.py): the whole ``sign_relaxed`` call, then its steps: the cached key, the
  header fields and the signature header, the body hash, RSA.
- ``Signer.sign``: what acceptance calls (finding the From: domain's key, signing, prepending); and,
  in CPU time of the whole process per message, what relay/submission/accept.py does around it under
  uvloop: ``key_for``, then ``Signer.sign`` in a worker thread (``asyncio.to_thread``), against the
  same ``Signer.sign`` called on the event loop.

    .venv/bin/python bench/dkim_sign.py --count 300
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from dkim.canonicalization import CanonicalizationPolicy  # noqa: E402

from relay import dkim_sign  # noqa: E402
from relay.dkim import SIGNED_HEADERS, DomainKey, Signer, _openssl_rsa_sign  # noqa: E402

WORDS = b"the quick brown fox jumps over a lazy dog while our spring sale ends on friday at noon".split()


def message(size: int) -> bytes:
    """A plain-text message of about ``size`` bytes, CRLF, with the fields a newsletter has."""
    head = (
        b"From: Shop <news@example.com>\r\nTo: user@example.org\r\nSubject: Our spring sale\r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench.1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"
        b"List-Unsubscribe: <mailto:unsubscribe@example.com>\r\n\r\n"
    )
    lines, i = [], 0
    while len(head) + sum(len(line) + 2 for line in lines) < size:
        line = b" ".join(WORDS[(i + k) % len(WORDS)] for k in range(12))
        lines.append(line if i % 9 else b"")  # a paragraph break now and then
        i += 1
    return head + b"\r\n".join(lines) + b"\r\n"


def median_us(fn: Callable[[], object], count: int) -> float:
    """The median CPU time of a call (this thread's: what other processes do on the machine adds nothing)."""
    fn()  # warm up: compiled patterns, caches
    times = []
    for _ in range(count):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times) * 1e6


def dkimpy_steps(raw: bytes, pem: bytes, count: int) -> dict[str, float]:
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    parsed_key = dkim.crypto.parse_pem_private_key(pem)
    headers, body = dkim.rfc822_parse(raw)
    sig_header = (b"DKIM-Signature", b" v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1; h=from; bh=x; b=")

    def hash_headers() -> None:
        canonical = policy.canonicalize_headers(headers)
        dkim.hash_headers(hashlib.sha256(), policy, canonical, SIGNED_HEADERS, sig_header, {})

    def rsa_step() -> None:
        digest = dkim.HashThrough(hashlib.sha256())
        digest.update(b"x" * 600)
        _openssl_rsa_sign(digest, parsed_key)

    return {
        "whole dkim.sign": median_us(
            lambda: dkim.sign(
                raw,
                b"s1",
                b"example.com",
                pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(SIGNED_HEADERS),
                linesep=b"\r\n",
            ),
            count,
        ),
        "parse key": median_us(lambda: dkim.crypto.parse_pem_private_key(pem), count),
        "parse message": median_us(lambda: dkim.rfc822_parse(raw), count),
        "canonicalise + hash headers": median_us(hash_headers, count),
        "canonicalise + hash body": median_us(lambda: hashlib.sha256(policy.canonicalize_body(body)).digest(), count),
        "RSA": median_us(rsa_step, count),
    }


def relay_steps(raw: bytes, pem: bytes, count: int) -> dict[str, float]:
    key = dkim_sign.private_key(pem)
    assert key is not None
    bh = dkim_sign.body_hash(raw, dkim_sign.split_header(raw)[1])
    tags = dkim_sign.tags_before_b(b"example.com", b"s1", SIGNED_HEADERS, 1_800_000_000, bh)

    def headers() -> None:
        block, _ = dkim_sign.split_header(raw)
        fields = dkim_sign.header_fields(block)
        assert fields is not None
        dkim_sign.signed_headers(fields, SIGNED_HEADERS) + dkim_sign.hashed_signature_header(tags)
        dkim_sign.fold(tags + b"A" * 344 + b"\r\n")

    signer = Signer({"example.com": DomainKey("example.com", "s1", pem)})
    return {
        "whole sign_relaxed": median_us(
            lambda: dkim_sign.sign_relaxed(raw, b"example.com", b"s1", pem, SIGNED_HEADERS, 1_800_000_000), count
        ),
        "key (cached)": median_us(lambda: dkim_sign.private_key(pem), count),
        "check CRLF": median_us(lambda: dkim_sign.crlf_text(raw), count),
        "headers + signature header": median_us(headers, count),
        "canonicalise + hash body": median_us(lambda: dkim_sign.body_hash(raw, dkim_sign.split_header(raw)[1]), count),
        "RSA": median_us(lambda: key.sign(b"x" * 600, padding.PKCS1v15(), hashes.SHA256()), count),
        "Signer.sign (From: lookup + sign)": median_us(lambda: signer.sign(raw), count),
    }


def acceptance_steps(raw: bytes, pem: bytes, count: int) -> dict[str, float]:
    """Process CPU per message for signing as acceptance does it (in a thread) and on the loop."""
    import uvloop

    signer = Signer({"example.com": DomainKey("example.com", "s1", pem)})

    async def in_thread() -> float:
        await asyncio.to_thread(signer.sign, raw)  # warm up: the worker thread
        start = time.process_time()
        for _ in range(count):
            if signer.key_for(raw) is not None:
                await asyncio.to_thread(signer.sign, raw)
        return time.process_time() - start

    async def on_loop() -> float:
        start = time.process_time()
        for _ in range(count):
            signer.sign(raw)
        return time.process_time() - start

    return {
        "key_for + to_thread(Signer.sign)": uvloop.run(in_thread()) / count * 1e6,
        "Signer.sign on the event loop": uvloop.run(on_loop()) / count * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=300, help="timed calls per step (the median is printed)")
    ap.add_argument("--bits", type=int, default=2048, help="RSA key size")
    args = ap.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    print(f"rsa-{args.bits}, relaxed/relaxed, median of {args.count} calls, µs of CPU per signature")
    for size in (5_000, 100_000):
        raw = message(size)
        print(f"\n{len(raw):,} byte message")
        for path, steps in (("dkimpy", dkimpy_steps), ("relay", relay_steps), ("accept", acceptance_steps)):
            for step, us in steps(raw, pem, args.count).items():
                print(f"  {path:7} {step:36} {us:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
