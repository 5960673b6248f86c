"""What a MAC per result would cost, next to what a result already costs the SDK.

`python -m benchmarks.result_mac` times, on this machine and in this process (no stack), for
results of 100 B, 10 KiB and 1 MiB (the length of the serialized value, the `result` field):

- what the Executor does with each result today: `fnrelay.wire.decode_results` of a
  results message holding it, and `fnrelay.serialize.deserialize` of its value;
- the MAC that docs/result-authentication.md weighs: HMAC-SHA256 with a 32-byte key over the
  framed task group, task id, status, value and exception, as the endpoint would make it and
  the SDK check it (`hmac.digest` plus `hmac.compare_digest`), and beside it keyed BLAKE2b and
  plain SHA-256 (what the blob check already pays per byte).

Each figure is the median over several timed batches of one operation, in microseconds. Two
kinds of value: JSON (a list of ints; strategy 03) and dill (bytes, as an array's buffer
would be; strategy 02, base64). `--quick` times few short batches (for tests, not figures).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import ssl
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from fnrelay import serialize, wire

SIZES = (("100 B", 100), ("10 KiB", 10 * 1024), ("1 MiB", 1024 * 1024))
KEY = os.urandom(32)
#: Domain separation and version of the framing, so a MAC of another message never matches.
CONTEXT = b"fnrelay-result-mac-v1"


def frame(*fields: bytes | None) -> bytes:
    """Length-prefixed fields (8-byte big-endian length; None as 2**64-1), so no two field
    lists give the same bytes: the MAC input of docs/result-authentication.md."""
    parts = [CONTEXT]
    for field in fields:
        if field is None:
            parts.append(b"\xff" * 8)
        else:
            parts += [len(field).to_bytes(8, "big"), field]
    return b"".join(parts)


def mac_input(result: wire.ResultMessage) -> bytes:
    """The bytes a result's MAC covers: every field the SDK unpickles or shows as the outcome."""
    exc = result.exception

    def b(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    return frame(b(result.task_group_id), result.task_id.encode(), result.status.encode(),
                 b(result.result), b(exc.type if exc else None),
                 b(exc.message if exc else None), b(exc.traceback if exc else None),
                 b(exc.serialized if exc else None))


def value_of(kind: str, size: int) -> Any:
    """A value whose serialized text is as long as it can be without exceeding `size`."""
    noise = os.urandom(size)

    def make(n: int) -> Any:
        return list(range(100_000, 100_000 + n)) if kind == "json" else noise[:n]

    low, high = 1, size  # the serialized length grows with n: the largest n that fits
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(serialize.serialize(make(mid))) <= size else (low, mid - 1)
    return make(low)


def message(text: str) -> tuple[wire.ResultMessage, bytes]:
    """A success as an endpoint sends it (the worker's details), and its results message."""
    result = wire.ResultMessage(
        task_id=wire.new_task_id(), status=wire.TaskState.SUCCESS.value, result=text,
        task_group_id=str(uuid.uuid4()),
        details={**serialize.versions(), "hostname": platform.node(), "pid": os.getpid(),
                 "started": time.time(), "completed": time.time()})
    return result, wire.encode_results([result])


#: Seconds per timed batch (--quick: less, for a smoke test).
BATCH_SECONDS = 0.05


def per_call(fn: Callable[[], Any], batches: int) -> float:
    """Median microseconds per call of `fn`, over `batches` batches of BATCH_SECONDS each."""
    n, start = 1, time.perf_counter()
    fn()
    while (elapsed := time.perf_counter() - start) < BATCH_SECONDS / 5:
        n *= 2
        start = time.perf_counter()
        for _ in range(n):
            fn()
    n = max(1, int(n * BATCH_SECONDS / max(elapsed, 1e-9)))
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times) * 1e6


def row(kind: str, label: str, size: int, batches: int) -> dict[str, Any]:
    """The figures of one value: today's work on it and a MAC's, per result."""
    text = serialize.serialize(value_of(kind, size))
    result, body = message(text)
    data = mac_input(result)
    tag = hmac.digest(KEY, data, "sha256")

    def verify(got: wire.ResultMessage) -> bool:
        """The SDK's check: frame what arrived, MAC it, compare in constant time."""
        return hmac.compare_digest(hmac.digest(KEY, mac_input(got), "sha256"), tag)

    assert verify(wire.decode_results(body)[0])
    return {
        "kind": kind, "size": label, "value_bytes": len(text.encode()),
        "message_bytes": len(body),
        "decode_results": per_call(lambda: wire.decode_results(body), batches),
        "deserialize": per_call(lambda: serialize.deserialize(text), batches),
        "frame": per_call(lambda: mac_input(result), batches),
        "hmac_sha256": per_call(lambda: verify(result), batches),
        "blake2b_keyed": per_call(lambda: hashlib.blake2b(
            mac_input(result), key=KEY, digest_size=32).digest(), batches),
        "sha256": per_call(lambda: hashlib.sha256(data).digest(), batches),
    }


def key_seal(batches: int) -> tuple[float, float] | None:
    """Microseconds to seal a 32-byte key to an endpoint's X25519 public key and to open it
    (design E of docs/result-authentication.md: once per task group and endpoint, not per
    result), or None without the `cryptography` package."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import (
            X25519PrivateKey,
            X25519PublicKey,
        )
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        return None
    endpoint = X25519PrivateKey.generate()
    info = b"fnrelay-result-key-v1"
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw

    def derive(shared: bytes) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared))

    def seal() -> bytes:
        eph = X25519PrivateKey.generate()
        sealed = derive(eph.exchange(endpoint.public_key())).encrypt(bytes(12), KEY, info)
        return eph.public_key().public_bytes(*raw) + sealed

    def unseal(box: bytes) -> bytes:
        eph = X25519PublicKey.from_public_bytes(box[:32])
        return derive(endpoint.exchange(eph)).decrypt(bytes(12), box[32:], info)

    box = seal()
    assert unseal(box) == KEY
    return per_call(seal, batches), per_call(lambda: unseal(box), batches)


def measure(batches: int) -> list[dict[str, Any]]:
    return [row(kind, label, size, batches)
            for kind in ("json", "dill") for label, size in SIZES]


def render(rows: list[dict[str, Any]]) -> str:
    head = ("value", "msg bytes", "decode", "deserialize", "today", "frame", "HMAC-SHA256",
            "keyed BLAKE2b", "SHA-256", "HMAC / today")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        today = r["decode_results"] + r["deserialize"]
        lines.append(" | ".join((
            f"{r['kind']} {r['size']}", f"{r['message_bytes']:,}",
            *(f"{r[k]:.1f}" for k in ("decode_results", "deserialize")), f"{today:.1f}",
            *(f"{r[k]:.1f}" for k in ("frame", "hmac_sha256", "blake2b_keyed", "sha256")),
            f"{r['hmac_sha256'] / today:.0%}")))
    lines.append("today = decode + deserialize, the SDK's own work on a result; HMAC-SHA256 and "
                 "keyed BLAKE2b include frame (building the MAC input), HMAC-SHA256 also the "
                 "constant-time compare; SHA-256 is of the framed bytes alone.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.result_mac", description=(
        "Time a MAC per result (HMAC-SHA256, keyed BLAKE2b) beside decoding and deserializing "
        "a result with fnrelay's own code, for 100 B, 10 KiB and 1 MiB values "
        "(docs/result-authentication.md). Microseconds per result, medians."))
    p.add_argument("--batches", type=int, default=9, help="timed batches per figure (9)")
    p.add_argument("--quick", action="store_true",
                   help="3 short batches: a smoke test, not figures")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args(argv)
    if a.batches < 1:
        p.error(f"--batches must be a positive integer, got {a.batches}")
    global BATCH_SECONDS
    batches = 3 if a.quick else a.batches
    if a.quick:
        BATCH_SECONDS = 0.005
    rows, seal = measure(batches), key_seal(batches)
    if a.json:
        print(json.dumps({"python": platform.python_version(),
                          "openssl": ssl.OPENSSL_VERSION, "machine": platform.machine(),
                          "rows": rows, "key_seal_open_us": seal}, indent=1))
        return 0
    print(f"µs per result, median; Python {platform.python_version()}, "
          f"{ssl.OPENSSL_VERSION}, {os.cpu_count()} CPUs")
    print(render(rows))
    if seal:
        print(f"once per task group and endpoint (design E): seal a key {seal[0]:.0f} µs, "
              f"open it {seal[1]:.0f} µs (X25519, HKDF-SHA256, ChaCha20-Poly1305)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
